//! The gRPC control API end to end: a real kolmd on real SmolLM2 artifacts,
//! called over its Unix socket with the generated tonic client, and
//! `kolmctl`'s daemon verbs against the same daemon.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::Daemon;
use kolm_artifact::{NoProgress, PackSpec};
use kolm_proto::daemon::v1 as pb;
use kolm_proto::daemon::v1::daemon_client::DaemonClient;
use serde_json::{json, Value};
use tonic::transport::Channel;
use tonic::Code;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn client(d: &Daemon) -> DaemonClient<Channel> {
    kolm_proto::connect_unix(&d.socket).await.unwrap()
}

fn text_request(model: &str, prompt: &str, max_tokens: u32) -> pb::GenerateRequest {
    pb::GenerateRequest {
        model: model.into(),
        prompt: Some(pb::generate_request::Prompt::Text(prompt.into())),
        temperature: Some(0.0),
        max_tokens: Some(max_tokens),
        ..Default::default()
    }
}

/// Runs a Generate call to its end: the text and the last message.
async fn generate(
    c: &mut DaemonClient<Channel>,
    request: pb::GenerateRequest,
) -> Result<(String, pb::GenerateResponse, usize), tonic::Status> {
    let mut stream = c.generate(request).await?.into_inner();
    let mut text = String::new();
    let mut messages = 0;
    while let Some(m) = stream.message().await? {
        messages += 1;
        text.push_str(&m.text);
        if m.finish_reason() != pb::FinishReason::Unspecified {
            return Ok((text, m, messages));
        }
    }
    panic!("the stream ended without a last message");
}

fn code<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> (Code, String) {
    let s = r.unwrap_err();
    (s.code(), s.message().to_owned())
}

#[test]
fn control_api_loads_generates_embeds_and_unloads() {
    let d = Daemon::start("slots = 1");
    let mode = std::fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the socket must be private to its user");
    runtime().block_on(async {
        let mut c = client(&d).await;

        let s = c.status(pb::StatusRequest {}).await.unwrap().into_inner();
        assert_eq!(s.version, env!("CARGO_PKG_VERSION"));
        let hw = s.hardware.unwrap();
        assert!(hw.physical_cores >= 1 && hw.total_memory_bytes > hw.available_memory_bytes / 2);
        let listen = s.listen.unwrap();
        assert_eq!(listen.http, vec![d.addr.to_string()]);
        assert_eq!(listen.grpc, vec![format!("unix:{}", d.socket.display())]);
        assert_eq!(s.loaded_models, 0);

        let listed = c
            .list_artifacts(pb::ListArtifactsRequest {})
            .await
            .unwrap()
            .into_inner()
            .artifacts;
        let names: Vec<&str> = listed.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["alpha", "beta", "gamma", "smollm2"]);
        assert!(listed.iter().all(|a| a.trusted && !a.loaded));
        assert_eq!(listed[0].base.as_ref().unwrap().architecture, "llama");

        // Load, pinned; a second load only reports it.
        let load = pb::LoadRequest {
            reference: "smollm2".into(),
            keep_alive: Some("10m".into()),
            pin: true,
        };
        let first = c.load(load.clone()).await.unwrap().into_inner();
        assert_eq!(first.reference, "smollm2:0.1.0");
        assert!(!first.already_loaded && first.load_ms > 0);
        assert!(first.memory_bytes > 50_000_000, "{first:?}");
        assert_eq!(first.device, "cpu");
        let again = c.load(load).await.unwrap().into_inner();
        assert!(again.already_loaded && again.load_ms == 0);
        let loaded = c
            .list_loaded(pb::ListLoadedRequest {})
            .await
            .unwrap()
            .into_inner()
            .models;
        assert_eq!(loaded.len(), 1);
        let m = &loaded[0];
        assert!(m.pinned && m.keep_alive == "10m" && m.expires_in_seconds.is_none());
        assert_eq!((m.slots, m.context_length), (1, 512));
        assert!(m.base_digest.starts_with("sha256:"));

        // Greedy text over gRPC equals greedy text over HTTP.
        let prompt = "The capital of France is";
        let (text, last, messages) = generate(&mut c, text_request("smollm2", prompt, 12))
            .await
            .unwrap();
        assert!(messages >= 2, "tokens stream one by one");
        let usage = last.usage.unwrap();
        assert!(usage.prompt_tokens > 3 && usage.completion_tokens <= 12);
        let timings = last.timings.unwrap();
        assert!(timings.ttft_ms > 0.0 && timings.total_ms >= timings.ttft_ms);
        let http = d.post(
            "/v1/completions",
            &json!({"model": "smollm2", "prompt": prompt, "max_tokens": 12, "temperature": 0}),
        );
        assert_eq!(http.status, 200, "{}", http.text());
        assert_eq!(http.json()["choices"][0]["text"], text.as_str());

        // A chat with a system message goes through the template.
        let chat = pb::GenerateRequest {
            model: "smollm2".into(),
            prompt: Some(pb::generate_request::Prompt::Messages(pb::ChatMessages {
                messages: vec![
                    pb::ChatMessage {
                        role: "system".into(),
                        content: "You answer in one word.".into(),
                    },
                    pb::ChatMessage {
                        role: "user".into(),
                        content: "Name a colour.".into(),
                    },
                ],
            })),
            temperature: Some(0.0),
            max_tokens: Some(8),
            ..Default::default()
        };
        let (answer, last, _) = generate(&mut c, chat).await.unwrap();
        assert!(!answer.trim().is_empty());
        assert!(
            last.usage.unwrap().prompt_tokens > 15,
            "the template added its markup"
        );

        // Embeddings: one normalised vector per input, the model's width.
        let e = c
            .embed(pb::EmbedRequest {
                model: "smollm2".into(),
                inputs: vec!["a red apple".into(), "a green pear".into()],
                keep_alive: None,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(e.embeddings.len(), 2);
        for v in &e.embeddings {
            assert_eq!(v.values.len(), 576);
            let norm: f32 = v.values.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-3, "{norm}");
        }
        assert!(e.prompt_tokens >= 6);

        // Bad requests get the right codes, and the daemon keeps serving.
        let (c1, m1) = code(generate(&mut c, text_request("nope", "hi", 4)).await);
        assert_eq!(c1, Code::NotFound, "{m1}");
        assert!(m1.contains("nope"), "{m1}");
        let (c2, m2) = code(generate(&mut c, text_request("smollm2", "hi", 0)).await);
        assert_eq!(c2, Code::InvalidArgument, "{m2}");
        let mut bad_keep = text_request("smollm2", "hi", 4);
        bad_keep.keep_alive = Some("soon".into());
        assert_eq!(
            code(generate(&mut c, bad_keep).await).0,
            Code::InvalidArgument
        );
        let empty = pb::GenerateRequest {
            model: "smollm2".into(),
            prompt: Some(pb::generate_request::Prompt::Messages(pb::ChatMessages {
                messages: vec![],
            })),
            ..Default::default()
        };
        assert_eq!(code(generate(&mut c, empty).await).0, Code::InvalidArgument);
        let long = "word ".repeat(900);
        let (c3, m3) = code(generate(&mut c, text_request("smollm2", &long, 4)).await);
        assert_eq!(c3, Code::InvalidArgument, "{m3}");
        assert!(m3.contains("context"), "{m3}");
        let (c4, _) = code(
            c.load(pb::LoadRequest {
                reference: "missing:9".into(),
                ..Default::default()
            })
            .await,
        );
        assert_eq!(c4, Code::NotFound);

        // A client that cancels mid-stream frees the only slot at once.
        let mut stream = c
            .generate(text_request("smollm2", "Once upon a time", 400))
            .await
            .unwrap()
            .into_inner();
        stream.message().await.unwrap().unwrap();
        drop(stream);
        let started = Instant::now();
        generate(&mut c, text_request("smollm2", "Hello", 4))
            .await
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the slot was not freed"
        );

        // Unload frees the weights; the list is empty again.
        let u = c
            .unload(pb::UnloadRequest {
                reference: "smollm2".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(u.unloaded, ["smollm2:0.1.0"]);
        assert!(u.freed_bytes > 50_000_000, "{u:?}");
        let none = c
            .unload(pb::UnloadRequest {
                reference: "smollm2".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(none.unloaded.is_empty());
        assert!(c
            .list_loaded(pb::ListLoadedRequest {})
            .await
            .unwrap()
            .into_inner()
            .models
            .is_empty());
    });
}

/// Packs a small artifact on the SmolLM2 base, signed by `home`'s key.
fn pack(home: &Path, name: &str, out: &Path) {
    let keyring = kolm_store::Home::at(home).keyring();
    let (key, _) = keyring.signing_key_or_create_default(None).unwrap();
    let receipt = keyring.receipt_key().unwrap();
    let spec = PackSpec::new(name, "1.0.0", common::smollm2());
    kolm_artifact::pack(spec, &[&key], &receipt, out, &NoProgress).unwrap();
}

#[test]
fn install_and_remove_through_the_daemon_keep_the_store_safe() {
    let d = Daemon::start("");
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("delta.kolm");
    pack(common::home(), "delta", &good);
    runtime().block_on(async {
        let mut c = client(&d).await;
        let install = |path: &Path, allow_untrusted: bool| pb::InstallRequest {
            path: path.to_string_lossy().into_owned(),
            allow_untrusted,
            trusted_keys: vec![],
        };
        let mut stream = c.install(install(&good, false)).await.unwrap().into_inner();
        let mut steps = 0;
        let mut result = None;
        while let Some(m) = stream.message().await.unwrap() {
            match m.event.unwrap() {
                pb::install_progress::Event::Step(s) => {
                    assert!(s.bytes_done <= s.bytes_total, "{s:?}");
                    steps += 1;
                }
                pb::install_progress::Event::Result(r) => result = Some(r),
            }
        }
        let result = result.expect("a result ends the stream");
        assert!(steps >= 2, "progress was streamed");
        assert_eq!(
            (result.name.as_str(), result.version.as_str()),
            ("delta", "1.0.0")
        );
        assert_eq!(result.outcome(), pb::InstallOutcome::Installed);
        assert!(result.reused_bytes > 90_000_000, "the base blob is shared");

        // The daemon serves it at once.
        let (text, _, _) = generate(&mut c, text_request("delta", "Hello", 4))
            .await
            .unwrap();
        assert!(!text.is_empty());

        // A corrupted artifact is refused with the integrity class and
        // nothing of it is installed. (A damaged copy of an artifact already
        // installed, same signed manifest, is "already installed": its
        // blobs in the store are intact and nothing is read from the copy.)
        let bad = dir.path().join("bad.kolm");
        pack(common::home(), "epsilon", &bad);
        let mut bytes = std::fs::read(&bad).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x55;
        std::fs::write(&bad, &bytes).unwrap();
        let s = async {
            let mut stream = c.install(install(&bad, false)).await?.into_inner();
            while stream.message().await?.is_some() {}
            Ok::<_, tonic::Status>(())
        }
        .await
        .unwrap_err();
        assert_eq!(s.code(), Code::DataLoss, "{s:?}");
        assert_eq!(s.metadata().get("kolm-error-kind").unwrap(), "integrity");

        // An artifact from a stranger's key is refused unless allowed.
        let stranger = tempfile::tempdir().unwrap();
        let theirs = dir.path().join("theirs.kolm");
        pack(stranger.path(), "theirs", &theirs);
        let s = async {
            let mut stream = c.install(install(&theirs, false)).await?.into_inner();
            while stream.message().await?.is_some() {}
            Ok::<_, tonic::Status>(())
        }
        .await
        .unwrap_err();
        assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
        assert_eq!(s.metadata().get("kolm-error-kind").unwrap(), "untrusted");

        // Remove unloads first.
        let r = c
            .remove(pb::RemoveRequest {
                reference: "delta".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(r.was_loaded);
        let names: Vec<String> = c
            .list_artifacts(pb::ListArtifactsRequest {})
            .await
            .unwrap()
            .into_inner()
            .artifacts
            .into_iter()
            .map(|a| a.name)
            .collect();
        for absent in ["delta", "epsilon", "theirs"] {
            assert!(!names.contains(&absent.to_owned()), "{absent} in {names:?}");
        }
        assert_eq!(
            code(generate(&mut c, text_request("delta", "Hello", 4)).await).0,
            Code::NotFound
        );
    });
}

#[test]
fn grpc_over_tcp_needs_the_api_key() {
    let d = Daemon::start_with(
        "grpc_listen = \"127.0.0.1:0\"",
        &[("KOLM_API_KEY", "sesame")],
    );
    let log = d.log();
    let addr = log
        .lines()
        .filter_map(|l| l.split("gRPC control API on ").nth(1))
        .map(str::trim)
        .find(|a| !a.starts_with("unix:"))
        .unwrap_or_else(|| panic!("no TCP address in the log:\n{log}"))
        .to_owned();
    runtime().block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut c = DaemonClient::new(channel.clone());
        let (status, _) = code(c.status(pb::StatusRequest {}).await);
        assert_eq!(status, Code::Unauthenticated);
        let mut keyed = DaemonClient::with_interceptor(channel, |mut r: tonic::Request<()>| {
            r.metadata_mut()
                .insert("authorization", "Bearer sesame".parse().unwrap());
            Ok(r)
        });
        let s = keyed
            .status(pb::StatusRequest {})
            .await
            .unwrap()
            .into_inner();
        assert!(s.listen.unwrap().grpc.contains(&addr));
    });
}

// ---------------------------------------------------------------- kolmctl

fn kolmctl(d: &Daemon, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    d.kolmctl(args, stdin)
}

fn ok_json(d: &Daemon, args: &[&str]) -> Value {
    d.kolmctl_json(args)
}

#[test]
fn kolmctl_daemon_verbs_work_and_fall_back_offline() {
    let mut d = Daemon::start("");
    let status = ok_json(&d, &["status", "--json"]);
    assert_eq!(status["running"], true);
    assert_eq!(status["listen"]["http"][0], d.addr.to_string());

    let loaded = ok_json(
        &d,
        &["load", "smollm2", "--pin", "--keep-alive", "-1", "--json"],
    );
    assert_eq!(loaded["reference"], "smollm2:0.1.0");
    assert_eq!(loaded["already_loaded"], false);
    let ps = ok_json(&d, &["ps", "--json"]);
    assert_eq!(ps.as_array().unwrap().len(), 1);
    assert_eq!(ps[0]["pinned"], true);
    assert_eq!(ps[0]["keep_alive"], "-1");
    let table = kolmctl(&d, &["ps"], None);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("smollm2:0.1.0") && table.contains("pinned"),
        "{table}"
    );

    // `run` with a prompt: JSON, then streamed text; stdin as the prompt.
    let run = ok_json(
        &d,
        &[
            "run",
            "smollm2",
            "Say hello.",
            "--temperature",
            "0",
            "--max-tokens",
            "8",
            "--json",
        ],
    );
    assert!(!run["text"].as_str().unwrap().is_empty(), "{run}");
    assert!(run["usage"]["completion_tokens"].as_u64().unwrap() <= 8);
    let streamed = kolmctl(
        &d,
        &[
            "run",
            "smollm2",
            "Say hello.",
            "--temperature",
            "0",
            "--max-tokens",
            "8",
        ],
        None,
    );
    assert!(streamed.status.success());
    assert_eq!(
        String::from_utf8_lossy(&streamed.stdout).trim_end(),
        run["text"].as_str().unwrap().trim_end(),
        "greedy streaming prints the same text"
    );
    let piped = kolmctl(
        &d,
        &["run", "smollm2", "--temperature", "0", "--max-tokens", "8"],
        Some("Say hello."),
    );
    assert!(
        piped.status.success(),
        "{}",
        String::from_utf8_lossy(&piped.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&piped.stdout).trim_end(),
        run["text"].as_str().unwrap().trim_end()
    );

    // Errors are clear and exit 1.
    let missing = kolmctl(&d, &["run", "nope", "hi"], None);
    assert_eq!(missing.status.code(), Some(1));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("nope") && err.contains("install"), "{err}");
    let bad = kolmctl(&d, &["load", "smollm2", "--keep-alive", "soon"], None);
    assert_eq!(bad.status.code(), Some(1));

    // list shows what is loaded; rm goes through the daemon.
    let list = ok_json(&d, &["list", "--json"]);
    let smollm2 = list
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "smollm2")
        .unwrap();
    assert_eq!(smollm2["loaded"], true);
    let unloaded = ok_json(&d, &["unload", "smollm2", "--json"]);
    assert_eq!(unloaded["unloaded"][0], "smollm2:0.1.0");
    assert_eq!(ok_json(&d, &["ps", "--json"]).as_array().unwrap().len(), 0);

    // With kolmd stopped, daemon verbs say so and store verbs work offline.
    let _ = d.child.kill();
    let _ = d.child.wait();
    let down = kolmctl(&d, &["status"], None);
    assert_eq!(down.status.code(), Some(1));
    let err = String::from_utf8_lossy(&down.stderr);
    assert!(err.contains("kolmd is not running"), "{err}");
    let offline = ok_json(&d, &["list", "--json"]);
    assert_eq!(
        offline.as_array().unwrap().len(),
        list.as_array().unwrap().len()
    );
    assert!(offline
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["loaded"] == false));
}

/// One request path: the same chat through `/v1/chat/completions` and
/// through `kolmctl run` (gRPC) gives byte-identical text, greedy, sampled
/// with a seed, and with the temperature left to the default; so does a raw
/// prompt through `/v1/completions` and `run --raw`.
#[test]
fn both_doors_give_the_same_bytes_for_the_same_request() {
    let d = Daemon::start("");
    let question = "Name three colours of the rainbow.";
    let [http, grpc] = d.chat_both_ways(
        "smollm2",
        question,
        json!({"temperature": 0, "max_tokens": 24}),
        &["--temperature", "0", "--max-tokens", "24"],
    );
    assert!(!http.text.is_empty());
    assert_eq!(http, grpc, "greedy");
    let greedy = http.text;
    let mut differs_from_greedy = false;
    for seed in ["7", "90210"] {
        let [http, grpc] = d.chat_both_ways(
            "smollm2",
            question,
            json!({"temperature": 0.9, "seed": seed.parse::<u64>().unwrap(), "max_tokens": 24}),
            &["--temperature", "0.9", "--seed", seed, "--max-tokens", "24"],
        );
        assert_eq!(http, grpc, "sampled with seed {seed}");
        differs_from_greedy |= http.text != greedy;
    }
    assert!(differs_from_greedy, "sampling with a seed must sample");
    // Unset temperature: one default on both doors.
    let [http, grpc] = d.chat_both_ways(
        "smollm2",
        question,
        json!({"seed": 11, "max_tokens": 24}),
        &["--seed", "11", "--max-tokens", "24"],
    );
    assert_eq!(http, grpc, "default temperature");

    let prompt = "The three primary colours are";
    let r = d.post(
        "/v1/completions",
        &json!({"model": "smollm2", "prompt": prompt, "max_tokens": 16, "temperature": 0.9, "seed": 5}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let grpc = ok_json(
        &d,
        &[
            "run",
            "smollm2",
            prompt,
            "--raw",
            "--temperature",
            "0.9",
            "--seed",
            "5",
            "--max-tokens",
            "16",
            "--json",
        ],
    );
    assert_eq!(r.json()["choices"][0]["text"], grpc["text"], "raw prompt");

    // The same refusals: a seed the engine cannot honour, by either door.
    let r = d.post(
        "/v1/chat/completions",
        &json!({"model": "smollm2", "messages": [{"role": "user", "content": "hi"}],
                "seed": 4294967296u64}),
    );
    assert_eq!(r.error(400)["param"], "seed");
    let out = kolmctl(&d, &["run", "smollm2", "hi", "--seed", "4294967296"], None);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("seed must be between 0 and 4294967295"),
        "{stderr}"
    );
}
