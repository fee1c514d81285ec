//! `kolmctl compile` end to end with a real teacher: a kolmd serving
//! SmolLM2-135M-Instruct (given solved examples in its system prompt by the
//! compiler) is asked for the orders task (free text → `{"item","qty"}`) on
//! 40 examples, with 20 held-out tests, for a LoRA student on the same base.
//! That teacher labels almost nothing correctly, so the student learns the
//! examples' reference outputs (`distill.from_reference`); this test is of
//! the pipeline and its honest numbers, not of a teacher's worth.
//! Then the same task recompiles through kolmd's `Compile` call from the
//! teacher cache alone and kolmd installs the result.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{kolmctl_path, minilm_zip, Daemon};
use kolm_compile::kscore::KScore;
use kolm_compile::pipeline::{DraftingSummary, EvalPack, TestRecord};
use serde_json::Value;

const TASK: &str = "Turn a free-text fruit order into compact JSON with the item (singular) and the quantity as an integer.";

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/orders")
        .join(name)
}

/// The task file both compiles use: one teacher cache for both. `extra`
/// lines go before the teacher settings.
fn task_file(dir: &Path, teacher: &Daemon, extra: &str) -> PathBuf {
    let path = dir.join("kolm.toml");
    let text = format!(
        "task = {TASK:?}\nexamples = {:?}\ntests = {:?}\nbase = {:?}\nteacher = \"openai:smollm2\"\nk = 2\ngate = 0.0\n{extra}\n[teacher_config]\nbase_url = \"{}/v1\"\napi_key_env = \"\"\nconcurrency = 2\ncache_dir = {:?}\n",
        data("examples.jsonl"),
        data("tests.jsonl"),
        common::smollm2(),
        teacher.url(),
        dir.join("teacher-cache"),
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn run(args: &[&str], home: &Path) -> Output {
    Command::new(kolmctl_path())
        .args(args)
        .env("KOLM_HOME", home)
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The eval pack inside a verified artifact.
fn eval_pack(artifact: &Path) -> EvalPack {
    let policy = kolm_artifact::TrustPolicy {
        keys: Vec::new(),
        allow_untrusted: true,
    };
    let verified = kolm_artifact::verify(artifact, &policy, &kolm_artifact::NoProgress).unwrap();
    let bytes = verified
        .read_entry("eval/heldout.jsonl")
        .expect("an eval pack");
    EvalPack::parse(&bytes).unwrap()
}

#[test]
fn a_kolmd_teacher_compiles_the_orders_task_and_a_recompile_is_free() {
    let teacher = Daemon::start("slots = 2\ncontext = 1024\n");
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let task = task_file(dir.path(), &teacher, "");
    let out = dir.path().join("orders.kolm");

    // First compile: real teacher calls.
    let first = run(
        &[
            "compile",
            "--file",
            task.to_str().unwrap(),
            "--epochs",
            "3",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ],
        &home,
    );
    let report = json_of(&first);
    assert!(
        first.status.success(),
        "compile failed: {report}\n{}\nteacher log:\n{}",
        String::from_utf8_lossy(&first.stderr),
        teacher.log()
    );
    let student = report["student_pass_rate"].as_f64().unwrap();
    let base = report["base_pass_rate"].as_f64().unwrap();
    eprintln!(
        "student {student}, base {base}, teacher {}, K {}, distill {}, train {}",
        report["teacher_pass_rate"], report["k_score"], report["distill"], report["train"]
    );
    // Both decode under the verifier's JSON schema, which makes the base
    // good at this easy task; the adapter still has to do at least as well.
    assert!(
        student >= base && student >= 0.85,
        "the student ({student}) should be right on this task and no worse than the base alone ({base}): {report}"
    );
    assert!(report["teacher_calls"].as_u64().unwrap() > 0);
    assert_eq!(report["tests"], 20);

    // It verifies, and K on the cover is the one the eval pack gives.
    let verify = run(&["verify", out.to_str().unwrap(), "--json"], &home);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let inspect = json_of(&run(&["inspect", out.to_str().unwrap(), "--json"], &home));
    let cover = &inspect["manifest"]["predicate"]["kScore"];
    let pack = eval_pack(&out);
    assert_eq!(pack.tests.len(), 20);
    let recomputed = KScore::compute(&pack.kscore_inputs()).unwrap();
    for (field, value) in [
        ("value", recomputed.k),
        ("accuracy", recomputed.accuracy),
        ("size", recomputed.size),
        ("latency", recomputed.latency),
        ("cost", recomputed.cost),
        ("coverage", recomputed.coverage),
    ] {
        let on_cover = cover[field]
            .as_f64()
            .unwrap_or_else(|| panic!("{field} in {cover}"));
        assert!(
            (on_cover - value).abs() < 1e-12,
            "{field}: manifest {on_cover}, eval pack {value}"
        );
    }
    let (s, b, _) = pack.pass_rates();
    assert_eq!((s, b), (student, base));
    // The reported accuracy is a hand recount: an answer is right when it
    // is the reference as a JSON value (serde_json's equality ignores key
    // order), nothing else.
    let recount = |answer: fn(&TestRecord) -> &str| {
        let right = pack
            .tests
            .iter()
            .filter(|t| {
                let reference: Value = serde_json::from_str(t.output.as_deref().unwrap()).unwrap();
                serde_json::from_str::<Value>(answer(t)).ok() == Some(reference)
            })
            .count();
        right as f64 / pack.tests.len() as f64
    };
    assert_eq!(recount(|t| t.student.output.as_str()), student, "{report}");
    assert_eq!(recount(|t| t.base.output.as_str()), base, "{report}");
    assert_eq!(
        recount(|t| t.teacher.output.as_str()),
        report["teacher_pass_rate"].as_f64().unwrap()
    );
    assert_eq!(report["accuracy"]["student"]["accuracy"]["n"], 20);
    // Drafting: the manifest's figures are the eval pack's recount, and
    // they hold together (accepted of drafted, the speedup the ratio of
    // the two recorded rates).
    let drafting = pack
        .drafting()
        .expect("a version 3 pack has decode figures");
    let recorded: DraftingSummary = serde_json::from_value(
        inspect["manifest"]["predicate"]["compile"]["evaluation"]["drafting"].clone(),
    )
    .unwrap();
    assert_eq!(recorded, drafting);
    assert_eq!(
        serde_json::from_value::<DraftingSummary>(report["drafting"].clone()).unwrap(),
        drafting
    );
    eprintln!("drafting on the orders eval pack: {drafting:?}");
    assert_eq!(drafting.tests, 20);
    assert!(drafting.accepted <= drafting.drafted, "{drafting:?}");
    assert!(drafting.steps > 0, "{drafting:?}");
    let (d, u) = (
        drafting.drafted_tokens_per_s.unwrap(),
        drafting.undrafted_tokens_per_s.unwrap(),
    );
    assert_eq!(drafting.speedup, Some(d / u), "{drafting:?}");
    for t in &pack.tests {
        let f = t.drafting.as_ref().unwrap();
        // Each step samples one token of the model's own (the end token
        // included, which the answer's tokens do not count).
        assert!(f.accepted <= f.drafted, "{f:?}");
        assert!(f.steps + f.accepted <= f.tokens + 1, "{f:?}");
    }
    eprintln!("drafting: {}", drafting.describe());
    assert_eq!(cover["accuracy"].as_f64().unwrap(), student, "{cover}");
    // The receipts name every stage.
    let receipts = inspect["manifest"]["predicate"]["receipts"]["length"]
        .as_u64()
        .unwrap();
    assert_eq!(receipts, 5, "distill, train, decompose, evaluate, pack");

    // The verifier explains itself.
    let explain = run(&["verifier", "explain", out.to_str().unwrap()], &home);
    assert!(explain.status.success());
    assert!(String::from_utf8_lossy(&explain.stdout).contains("is one of"));

    // Recompile through kolmd: no teacher call, the artifact is installed.
    drop(teacher);
    let daemon = Daemon::start_with(
        "slots = 2\ncontext = 1024\n",
        &[("KOLM_KOLMCTL", kolmctl_path().to_str().unwrap())],
    );
    // The task file points at the first teacher's address, which is gone:
    // a cache miss would fail, so success proves the cache answered.
    let out2 = dir.path().join("orders2.kolm");
    let second = Command::new(kolmctl_path())
        .args([
            "compile",
            "--file",
            task.to_str().unwrap(),
            "--epochs",
            "1",
            "--name",
            "orders",
            "--out",
            out2.to_str().unwrap(),
            "--via-daemon",
            "--json",
        ])
        .env("KOLM_HOME", common::home())
        .env("KOLM_GRPC_SOCKET", &daemon.socket)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let report2 = json_of(&second);
    assert!(
        second.status.success(),
        "recompile failed: {report2}\n{}\n{}",
        String::from_utf8_lossy(&second.stderr),
        daemon.log()
    );
    assert_eq!(report2["teacher_calls"], 0, "{report2}");
    // Validation holds 8 of the 40 examples out of distillation.
    assert_eq!(report2["distill"]["examples"], 32, "{report2}");
    assert_eq!(report2["validation"]["examples"], 8, "{report2}");
    assert!(report2["cache_hits"].as_u64().unwrap() >= 32 * 2 + 20);
    assert_eq!(report2["installed"], "orders:0.1.0");
    let listed = run(&["list", "--json"], common::home());
    assert!(String::from_utf8_lossy(&listed.stdout).contains("\"orders\""));

    // Served exactly as evaluated: a plain chat with each held-out input,
    // no settings, gets the eval pack's student answer byte for byte, over
    // HTTP and over gRPC (`kolmctl run`).
    let pack = eval_pack(&out2);
    for test in &pack.tests {
        let messages: Vec<Value> = test
            .input
            .to_messages()
            .iter()
            .map(|m| serde_json::json!({"role": m.role, "content": m.content}))
            .collect();
        let r = daemon.post(
            "/v1/chat/completions",
            &serde_json::json!({"model": "orders", "messages": messages}),
        );
        assert_eq!(r.status, 200, "{}\n{}", r.text(), daemon.log());
        let served = r.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            served.trim(),
            test.student.output,
            "HTTP, input {:?}",
            test.input
        );
        let prompt = match &test.input {
            kolm_compile::example::Input::Text(t) => t.clone(),
            other => panic!("the orders tests are plain text, got {other:?}"),
        };
        let grpc = Command::new(kolmctl_path())
            .args(["run", "orders", &prompt, "--json"])
            .env("KOLM_HOME", common::home())
            .env("KOLM_GRPC_SOCKET", &daemon.socket)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let v = json_of(&grpc);
        assert_eq!(
            v["text"].as_str().unwrap().trim(),
            test.student.output,
            "gRPC, input {prompt:?}: {v}"
        );
    }
    // A request that sets its own format is not forced into the schema.
    let free = daemon.post(
        "/v1/chat/completions",
        &serde_json::json!({
            "model": "orders",
            "messages": [{"role": "user", "content": "Say hello."}],
            "response_format": {"type": "text"},
            "max_tokens": 8,
        }),
    );
    assert_eq!(free.status, 200, "{}", free.text());
}

/// A compile whose client goes away is killed: nothing is written, the
/// daemon says so and keeps serving. The teacher accepts connections and
/// never answers, so the child is surely still distilling when the client
/// hangs up. Bad requests are refused before anything runs.
#[test]
fn a_cancelled_compile_kills_its_child_and_writes_nothing() {
    use kolm_proto::daemon::v1 as pb;
    let daemon = Daemon::start_with("", &[("KOLM_KOLMCTL", kolmctl_path().to_str().unwrap())]);
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("never.kolm");
    let task = dir.path().join("kolm.toml");
    std::fs::write(
        &task,
        format!(
            "task = {TASK:?}\nexamples = {:?}\ntests = {:?}\nbase = {:?}\nteacher = \"openai:m\"\nk = 1\nout = {:?}\n\n[teacher_config]\nbase_url = \"http://{}/v1\"\napi_key_env = \"\"\ntimeout_secs = 600\ncache_dir = {:?}\n",
            data("examples.jsonl"),
            data("tests.jsonl"),
            common::smollm2(),
            out,
            silent.local_addr().unwrap(),
            dir.path().join("cache"),
        ),
    )
    .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut client = kolm_proto::connect_unix(&daemon.socket).await.unwrap();
        let request = |args: Vec<String>, cwd: String| pb::CompileRequest {
            args,
            cwd,
            env: Default::default(),
            install: true,
        };
        let cwd = dir.path().to_string_lossy().into_owned();
        // Refused up front.
        for (args, cwd, needle) in [
            (vec![], cwd.clone(), "args"),
            (vec!["--via-daemon".to_owned()], cwd.clone(), "--via-daemon"),
            (vec!["x".to_owned()], "relative".to_owned(), "cwd"),
        ] {
            let status = client.compile(request(args, cwd)).await.unwrap_err();
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(status.message().contains(needle), "{status:?}");
        }
        let mut stream = client
            .compile(request(
                vec!["--file".into(), task.to_string_lossy().into_owned()],
                cwd,
            ))
            .await
            .unwrap()
            .into_inner();
        // Wait until the child is distilling (blocked on the silent teacher).
        loop {
            let event = stream
                .message()
                .await
                .unwrap()
                .expect("progress before the end");
            if let Some(pb::compile_event::Event::ProgressJson(j)) = event.event {
                if j.contains("\"stage_started\"") && j.contains("distill") {
                    break;
                }
            }
        }
        drop(stream);
    });
    assert!(
        common::eventually(std::time::Duration::from_secs(20), || daemon
            .log()
            .contains("compile cancelled by the client")),
        "{}",
        daemon.log()
    );
    // The child is gone: nothing runs with this task file any more.
    assert!(
        common::eventually(std::time::Duration::from_secs(20), || {
            let ps = Command::new("pgrep")
                .args(["-f", task.to_str().unwrap()])
                .output()
                .unwrap();
            !ps.status.success()
        }),
        "the compile child is still running"
    );
    assert!(!out.exists());
    // The daemon still serves.
    assert!(
        daemon
            .chat("smollm2", serde_json::json!({"max_tokens": 4}))
            .len()
            < 1000
    );
}

/// `--corpus`: the corpus is indexed first (a receipt of its own), every
/// teacher prompt is grounded in it by the run-time template, and the index
/// and its embedder ship in the artifact, which kolmd then serves with
/// citations. The image in the corpus is listed as skipped, not dropped.
#[test]
fn a_corpus_grounds_the_teacher_and_ships_in_the_artifact() {
    use kolm_compile::example::Message;
    use kolm_compile::pipeline::prompts;
    use kolm_compile::teacher::cache::CACHE_VERSION;
    use kolm_compile::teacher::{CacheKey, ChatRequest, Provider};

    let teacher = Daemon::start("slots = 2\ncontext = 2048\n");
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let corpus = dir.path().join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    std::fs::write(
        corpus.join("catalogue.md"),
        "# Fruit catalogue\n\nThe shop sells apples, bananas, oranges, pears, mangoes and lemons, one kind per order line. Quantities are whole numbers from one to nine.\n",
    )
    .unwrap();
    std::fs::write(
        corpus.join("returns.txt"),
        "Returns are accepted within fourteen days of delivery with the receipt; bruised fruit is refunded in full.\n",
    )
    .unwrap();
    std::fs::write(corpus.join("logo.png"), b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").unwrap();
    let task = task_file(
        dir.path(),
        &teacher,
        &format!(
            "corpus = {:?}\nembedder = {:?}\nrecall_k = 2\n",
            corpus,
            minilm_zip()
        ),
    );
    let out = dir.path().join("grounded.kolm");
    let compiled = run(
        &[
            "compile",
            "--file",
            task.to_str().unwrap(),
            "--k",
            "1",
            "--epochs",
            "1",
            "--out",
            out.to_str().unwrap(),
            "--json",
        ],
        &home,
    );
    let report = json_of(&compiled);
    assert!(
        compiled.status.success(),
        "compile failed: {report}\n{}\nteacher log:\n{}",
        String::from_utf8_lossy(&compiled.stderr),
        teacher.log()
    );
    eprintln!(
        "grounded: student {}, base {}, teacher {}, K {}, stages {}",
        report["student_pass_rate"],
        report["base_pass_rate"],
        report["teacher_pass_rate"],
        report["k_score"],
        report["stages"]
    );
    let recall = &report["recall"];
    assert_eq!(recall["files"], 2, "{report}");
    assert_eq!(recall["k"], 2, "{report}");
    assert!(recall["chunks"].as_u64().unwrap() >= 2, "{report}");
    let skipped = recall["skipped"].to_string();
    assert!(skipped.contains("logo.png"), "{skipped}");

    // The manifest records the index, its receipt comes first, and the
    // artifact carries the index and the embedder.
    let inspect = json_of(&run(&["inspect", out.to_str().unwrap(), "--json"], &home));
    let predicate = &inspect["manifest"]["predicate"];
    assert_eq!(predicate["compile"]["recall"]["files"], 2, "{predicate}");
    assert_eq!(
        predicate["receipts"]["length"], 6,
        "index, distill, train, decompose, evaluate, pack: {predicate}"
    );
    let policy = kolm_artifact::TrustPolicy {
        keys: Vec::new(),
        allow_untrusted: true,
    };
    let verified = kolm_artifact::verify(&out, &policy, &kolm_artifact::NoProgress).unwrap();
    assert!(verified.entry("recall/index.sqlite").is_some());
    assert!(verified
        .entries()
        .iter()
        .any(|e| e.record.name.starts_with("recall/embedder/")));

    // Offline recall from the artifact alone.
    let query = json_of(&run(
        &[
            "recall",
            "query",
            out.to_str().unwrap(),
            "which fruit does the shop sell",
            "--json",
        ],
        &home,
    ));
    assert_eq!(query[0]["source"], "catalogue.md", "{query}");

    // The teacher saw grounded prompts: the request for a held-out test,
    // grounded by the run-time template in the artifact's own index, is in
    // the teacher cache, and the ungrounded one is not.
    let task_def = kolm_compile::TaskFile::load(&task)
        .unwrap()
        .load_task()
        .unwrap();
    let test = &task_def.tests[0];
    let plain = prompts::teacher_prompt(&task_def, test, prompts::DEFAULT_SHOTS);
    let question = plain.last().unwrap().content.clone();
    let hits = kolm_recall::artifact::open(&verified)
        .unwrap()
        .query(&question, 2, kolm_recall::Mode::Hybrid)
        .unwrap();
    assert!(!hits.is_empty());
    let mut grounded = plain.clone();
    kolm_recall::prompt::ground(
        &mut grounded,
        &hits,
        |m| &m.role,
        |m| &mut m.content,
        |c| Message::new("system", c),
    );
    assert!(grounded[0].content.contains("[1] ("), "{grounded:?}");
    let base_url = format!("{}/v1", teacher.url());
    let cached = |messages: Vec<Message>| {
        let request = ChatRequest {
            messages,
            temperature: 0.0,
            max_tokens: predicate["compile"]["max_tokens"].as_u64().unwrap() as u32,
            seed: Some(0),
        };
        let digest = CacheKey {
            v: CACHE_VERSION,
            provider: Provider::OpenAi,
            base_url: &base_url,
            model: "smollm2",
            request: &request,
        }
        .digest();
        dir.path()
            .join("teacher-cache")
            .join(&digest[..2])
            .join(format!("{digest}.json"))
            .exists()
    };
    assert!(
        cached(grounded),
        "the grounded teacher request is not in the cache"
    );
    assert!(!cached(plain), "an ungrounded teacher request was made");

    // kolmd serves the compiled artifact grounded, with citations.
    drop(teacher);
    let store_home = kolm_store::Home::at(common::home());
    store_home
        .store()
        .unwrap()
        .install(&out, &policy, &kolm_artifact::NoProgress)
        .unwrap();
    let daemon = Daemon::start("context = 2048\n");
    let r = daemon.post(
        "/v1/chat/completions",
        &serde_json::json!({
            "model": "grounded",
            "messages": [{"role": "user", "content": "2 mangoes please"}],
            "max_tokens": 16,
            "temperature": 0,
        }),
    );
    assert_eq!(r.status, 200, "{}\n{}", r.text(), daemon.log());
    let v = r.json();
    let citations = v["kolm"]["citations"].as_array().expect("citations");
    assert_eq!(citations.len(), 2, "{v}");
    assert_eq!(citations[0]["source"], "catalogue.md", "{v}");
}
