//! Compile jobs: kolmd runs `kolmctl compile` as a child process (training
//! never runs inside the daemon), turns the child's JSON-line progress into
//! gRPC events, and installs the artifact when the compile passed its gate.
//! Dropping the job's event receiver (a cancelled call) kills the child.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use kolm_compile::report::{CompileEvent, CompileOutcome};
use kolm_proto::daemon::v1 as pb;
use kolm_store::Home;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;
use tonic::Status;

/// Environment variable naming the `kolmctl` binary kolmd runs.
pub const KOLMCTL_ENV: &str = "KOLM_KOLMCTL";

/// The `kolmctl` binary: `$KOLM_KOLMCTL`, else beside kolmd's own binary,
/// else `kolmctl` on the PATH.
pub fn kolmctl_path() -> PathBuf {
    if let Some(p) = std::env::var_os(KOLMCTL_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(beside) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("kolmctl")))
        .filter(|p| p.is_file())
    {
        return beside;
    }
    PathBuf::from("kolmctl")
}

/// Checks a request before anything runs.
pub fn validate(req: &pb::CompileRequest) -> Result<(), Status> {
    if req.args.is_empty() {
        return Err(Status::invalid_argument(
            "args must hold the arguments of `kolmctl compile`",
        ));
    }
    if let Some(bad) = req
        .args
        .iter()
        .find(|a| matches!(a.as_str(), "--via-daemon" | "--progress-json"))
    {
        return Err(Status::invalid_argument(format!(
            "{bad} cannot be passed to a compile in the daemon"
        )));
    }
    if req.cwd.is_empty() || !Path::new(&req.cwd).is_absolute() {
        return Err(Status::invalid_argument(
            "cwd must be the client's absolute working directory",
        ));
    }
    if let Some(bad) = req.env.keys().find(|k| !allowed_env(k)) {
        return Err(Status::invalid_argument(format!(
            "env may only carry *_KEY and *_BASE_URL variables (teacher keys and endpoints), not {bad}"
        )));
    }
    Ok(())
}

fn allowed_env(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        && (name.ends_with("_KEY") || name.ends_with("_BASE_URL"))
}

/// Starts the child and streams its events into `tx` until it exits.
pub async fn run(
    req: pb::CompileRequest,
    home: Home,
    tx: mpsc::Sender<Result<pb::CompileEvent, Status>>,
) {
    let result = run_inner(req, &home, &tx).await;
    let event = match result {
        Ok(result) => Ok(pb::CompileEvent {
            event: Some(pb::compile_event::Event::Result(result)),
        }),
        Err(status) => Err(status),
    };
    let _ = tx.send(event).await;
}

async fn run_inner(
    req: pb::CompileRequest,
    home: &Home,
    tx: &mpsc::Sender<Result<pb::CompileEvent, Status>>,
) -> Result<pb::CompileResult, Status> {
    let kolmctl = kolmctl_path();
    let env: BTreeMap<String, String> = req.env.into_iter().collect();
    let mut child = Command::new(&kolmctl)
        .arg("--quiet")
        .arg("compile")
        .args(&req.args)
        .args(["--json", "--progress-json"])
        .current_dir(&req.cwd)
        .env("KOLM_HOME", home.root())
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            Status::failed_precondition(format!(
                "cannot start {} (set {KOLMCTL_ENV} to the kolmctl binary): {e}",
                kolmctl.display()
            ))
        })?;
    tracing::info!(pid = child.id(), "compile started");
    let mut stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let read_report = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s).await;
        s
    });
    let mut lines = BufReader::new(stderr).lines();
    let mut last_error = None;
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) => {
                    // Progress events pass as they are; any other line
                    // (an error, a warning) becomes a note.
                    let json = if serde_json::from_str::<CompileEvent>(&line).is_ok() {
                        line
                    } else {
                        if let Some(e) = line.strip_prefix("error: ") {
                            last_error = Some(e.to_owned());
                        }
                        serde_json::to_string(&CompileEvent::Note { message: line })
                            .unwrap_or_default()
                    };
                    let event = pb::CompileEvent {
                        event: Some(pb::compile_event::Event::ProgressJson(json)),
                    };
                    if tx.send(Ok(event)).await.is_err() {
                        // The client went away: the child dies with `child`.
                        tracing::info!("compile cancelled by the client");
                        return Err(Status::cancelled("the client cancelled the compile"));
                    }
                }
                Ok(None) | Err(_) => break,
            },
            _ = tx.closed() => {
                tracing::info!("compile cancelled by the client");
                return Err(Status::cancelled("the client cancelled the compile"));
            }
        }
    }
    let status = child
        .wait()
        .await
        .map_err(|e| Status::internal(format!("lost the compile child: {e}")))?;
    let report_json = read_report.await.unwrap_or_default().trim().to_owned();
    let exit_code = status.code().unwrap_or(-1);
    let outcome = serde_json::from_str::<CompileOutcome>(&report_json);
    let error = match &outcome {
        Ok(CompileOutcome::Failed(f)) => Some(f.error.message.clone()),
        Ok(CompileOutcome::Report(_)) => last_error,
        Err(e) => last_error.or_else(|| Some(format!("its report cannot be read ({e})"))),
    }
    .filter(|_| exit_code != 0);
    let mut installed = None;
    if exit_code == 0 && req.install {
        let artifact = match &outcome {
            Ok(CompileOutcome::Report(r)) => r.artifact.clone(),
            _ => {
                return Err(Status::internal(format!(
                    "the compile succeeded but its report cannot be read: {report_json}"
                )))
            }
        };
        if let Some(path) = artifact {
            let path = Path::new(&req.cwd).join(path);
            let home = home.clone();
            let record = tokio::task::spawn_blocking(move || {
                let policy = home.keyring().trust_policy(false)?;
                home.store()?
                    .install(&path, &policy, &kolm_artifact::NoProgress)
            })
            .await
            .map_err(|_| Status::internal("the install task failed"))?
            .map_err(|e| {
                Status::failed_precondition(format!("compiled, but cannot install: {e}"))
            })?;
            installed = Some(record.record.reference());
        }
    }
    tracing::info!(exit_code, ?installed, "compile finished");
    Ok(pb::CompileResult {
        exit_code,
        report_json,
        installed,
        error,
    })
}
