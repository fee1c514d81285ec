//! The verbs on the local store: `install`, `list`, `show`, `rm`, `gc`.
//! `install`, `list` and `rm` go through kolmd when it runs (so it knows
//! at once, and unloads what is removed) and use the store directly when it
//! does not.

use anyhow::Context;
use kolm_artifact::{Progress, SignerStatus};
use kolm_proto::daemon::v1 as pb;
use kolm_store::{Home, InstallOutcome};
use serde::Serialize;
use serde_json::json;
use tokio_stream::StreamExt;

use crate::daemon::{self, Daemon};

use crate::cli::{InstallArgs, RefArgs};
use crate::output;
use crate::progress::Bar;

pub fn install(home: &Home, args: InstallArgs, bar: &Bar) -> anyhow::Result<()> {
    if let Some(d) = daemon::connect(home)? {
        return install_through(&d, args, bar);
    }
    let policy = super::trust_policy(&home.keyring(), &args.trust)?;
    let store = home.store()?;
    let report = store.install(&args.artifact, &policy, bar)?;
    let r = &report.record;
    if args.json {
        let mut value = serde_json::to_value(&report)?;
        value["ok"] = json!(true);
        return output::json(&value);
    }
    let what = match &report.outcome {
        InstallOutcome::Installed => "installed",
        InstallOutcome::AlreadyInstalled => "already installed",
        InstallOutcome::Replaced { .. } => "replaced",
    };
    print_installed(
        what,
        &r.name,
        &r.version,
        report.written_bytes,
        report.reused_bytes,
        r.signers.is_empty(),
    );
    Ok(())
}

fn print_installed(
    what: &str,
    name: &str,
    version: &str,
    written: u64,
    reused: u64,
    untrusted: bool,
) {
    outln!(
        "{what} {name}:{version} ({} written, {} shared with installed artifacts)",
        output::size(written),
        output::size(reused)
    );
    if untrusted {
        outln!("  warning: installed with --allow-untrusted; its signer is not trusted");
    }
}

/// `install` while kolmd runs: the daemon verifies and copies (so it never
/// serves a half-installed artifact) and streams its progress here.
fn install_through(d: &Daemon, args: InstallArgs, bar: &Bar) -> anyhow::Result<()> {
    let path = std::fs::canonicalize(&args.artifact)
        .with_context(|| format!("cannot read {}", args.artifact.display()))?;
    let mut trusted_keys = Vec::new();
    for key in &args.trust.keys {
        let text = std::fs::read_to_string(key)
            .with_context(|| format!("cannot read public key {}", key.display()))?;
        kolm_artifact::PublicKey::parse(&text)
            .with_context(|| format!("{} is not a kolm public key", key.display()))?;
        trusted_keys.push(text.trim().to_owned());
    }
    let request = pb::InstallRequest {
        path: path.to_string_lossy().into_owned(),
        allow_untrusted: args.trust.allow_untrusted,
        trusted_keys,
    };
    let mut client = d.client.clone();
    let result = d.call(async move {
        let mut stream = client.install(request).await?.into_inner();
        let mut phase = String::new();
        let mut done = 0;
        while let Some(message) = stream.next().await {
            match message?.event {
                Some(pb::install_progress::Event::Step(step)) => {
                    if step.phase != phase {
                        if !phase.is_empty() {
                            bar.finish();
                        }
                        bar.start(&step.phase, step.bytes_total);
                        phase = step.phase;
                        done = 0;
                    }
                    bar.advance(step.bytes_done.saturating_sub(done));
                    done = step.bytes_done;
                }
                Some(pb::install_progress::Event::Result(result)) => {
                    bar.finish();
                    return Ok(result);
                }
                None => {}
            }
        }
        Err(tonic::Status::unavailable(
            "kolmd ended the install without a result",
        ))
    })?;
    let what = match result.outcome() {
        pb::InstallOutcome::AlreadyInstalled => "already installed",
        pb::InstallOutcome::Replaced => "replaced",
        _ => "installed",
    };
    if args.json {
        return output::json(&json!({
            "ok": true,
            "name": result.name,
            "version": result.version,
            "outcome": what.replace(' ', "_"),
            "written_bytes": result.written_bytes,
            "reused_bytes": result.reused_bytes,
            "previous_manifest_sha256": result.previous_manifest_sha256,
            "through_daemon": true,
        }));
    }
    print_installed(
        what,
        &result.name,
        &result.version,
        result.written_bytes,
        result.reused_bytes,
        args.trust.allow_untrusted && args.trust.keys.is_empty(),
    );
    Ok(())
}

/// One line of `list`, the same whether kolmd answered or the store did.
#[derive(Debug, Serialize)]
struct Listed {
    name: String,
    version: String,
    size: u64,
    base: ListedBase,
    k_score: Option<f64>,
    installed: String,
    trusted: bool,
    loaded: bool,
}

#[derive(Debug, Serialize)]
struct ListedBase {
    name: Option<String>,
    architecture: String,
    quantization: String,
    parameter_count: u64,
}

pub fn list(home: &Home, json: bool) -> anyhow::Result<()> {
    let listed: Vec<Listed> = match daemon::connect(home)? {
        Some(d) => d
            .call(d.client.clone().list_artifacts(pb::ListArtifactsRequest {}))?
            .into_inner()
            .artifacts
            .into_iter()
            .map(|a| {
                let b = a.base.unwrap_or_default();
                Listed {
                    name: a.name,
                    version: a.version,
                    size: a.size_bytes,
                    base: ListedBase {
                        name: b.name,
                        architecture: b.architecture,
                        quantization: b.quantization,
                        parameter_count: b.parameter_count,
                    },
                    k_score: a.k_score,
                    installed: a.installed,
                    trusted: a.trusted,
                    loaded: a.loaded,
                }
            })
            .collect(),
        // Without the daemon nothing is loaded.
        None => home
            .store()?
            .list()?
            .into_iter()
            .map(|r| {
                let p = &r.statement.predicate;
                Listed {
                    trusted: r.is_trusted(),
                    base: ListedBase {
                        name: p.base.name.clone(),
                        architecture: p.base.architecture.clone(),
                        quantization: p.base.quantization.clone(),
                        parameter_count: p.base.parameter_count,
                    },
                    k_score: p.k_score.as_ref().map(|k| k.value),
                    name: r.name,
                    version: r.version,
                    size: r.size,
                    installed: r.installed,
                    loaded: false,
                }
            })
            .collect(),
    };
    if json {
        return output::json(&listed);
    }
    if listed.is_empty() {
        outln!("no artifacts installed (add one with `kolmctl install X.kolm`)");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = listed
        .iter()
        .map(|a| {
            vec![
                format!("{}:{}", a.name, a.version),
                output::size(a.size),
                format!("{} {}", a.base.architecture, a.base.quantization),
                a.k_score.map_or_else(|| "-".into(), |k| format!("{k:.3}")),
                a.installed.clone(),
                if a.loaded { "yes" } else { "" }.into(),
            ]
        })
        .collect();
    output::table(&["NAME", "SIZE", "BASE", "K", "INSTALLED", "LOADED"], &rows);
    Ok(())
}

pub fn show(home: &Home, args: RefArgs, bar: &Bar) -> anyhow::Result<()> {
    let store = home.store()?;
    let record = store.get(&args.name)?;
    store.check(&record, bar)?;
    if args.json {
        return output::json(&json!({ "record": record, "blobs_verified": true }));
    }
    let signers = if record.signers.is_empty() {
        SignerStatus::Unchecked(Vec::new())
    } else {
        SignerStatus::Trusted(record.signers.clone())
    };
    super::artifact::print_manifest(&record.statement, &signers, &home.keyring());
    outln!();
    outln!(
        "installed {}; all {} blobs re-checked against their digests",
        record.installed,
        record.statement.predicate.entries.len()
    );
    Ok(())
}

pub fn remove(home: &Home, args: RefArgs) -> anyhow::Result<()> {
    // Through kolmd when it runs, so a loaded artifact is unloaded first.
    let (name, version, was_loaded) = match daemon::connect(home)? {
        Some(d) => {
            let r = d
                .call(d.client.clone().remove(pb::RemoveRequest {
                    reference: args.name.clone(),
                }))?
                .into_inner();
            (r.name, r.version, r.was_loaded)
        }
        None => {
            let record = home.store()?.remove(&args.name)?;
            (record.name, record.version, false)
        }
    };
    if args.json {
        return output::json(&json!({
            "ok": true, "removed": format!("{name}:{version}"), "was_loaded": was_loaded,
        }));
    }
    let unloaded = if was_loaded { ", unloaded first" } else { "" };
    outln!("removed {name}:{version}{unloaded} (run `kolmctl gc` to free its unshared blobs)");
    Ok(())
}

pub fn gc(home: &Home, json: bool) -> anyhow::Result<()> {
    let report = home.store()?.gc()?;
    if json {
        return output::json(&report);
    }
    outln!(
        "removed {} blobs and {} leftover temporary files, freed {}",
        report.removed_blobs,
        report.removed_temp_files,
        output::size(report.freed_bytes)
    );
    Ok(())
}
