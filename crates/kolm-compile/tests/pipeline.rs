//! A whole `pipeline::compile`, every stage run, with fakes for the heavy
//! parts: a student whose adapter answers correctly (and whose base does
//! not), a trainer that writes placeholder adapters, a corpus that grounds
//! nothing, and a local HTTP server as a teacher that answers every prompt
//! correctly and writes synthetic inputs when asked. It checks what the
//! pipeline owns: the order of the stages and their progress events, one
//! receipt per stage in a linked chain, the times, validation's choice,
//! the eval pack, and the drafting figures from the student's two decodes
//! into the eval pack and the manifest (and a compile refused when the two
//! decodes disagree).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use kolm_artifact::receipts::{DigestRef, ReceiptChain, ReceiptKey};
use kolm_artifact::serving::Serving;
use kolm_compile::example::{Example, Input, Message};
use kolm_compile::pipeline::{
    self, AdapterTrainer, CompileError, CompileOptions, CompileProgress, DecodeFigures,
    DraftCounts, Drafting, DraftingSummary, Grounding, HyperParams, IndexBuilt, OnEpoch, Stage,
    StageError, StudentAnswer, StudentEngine, TrainSummary,
};
use kolm_compile::task::Task;
use kolm_compile::teacher::{Teacher, TeacherConfig, TeacherSettings};

/// The task's true output for `word`.
fn answer(word: &str) -> String {
    serde_json::json!({"word": word, "length": word.len()}).to_string()
}

/// The last user message of a conversation.
fn last_user(conversation: &[Message]) -> &str {
    conversation
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map_or("", |m| m.content.as_str())
}

/// Tokens are word lengths; with an adapter it answers correctly, the base
/// alone does not. An answer's tokens are its bytes; token by token it
/// takes 5 ms (4 ms decoding), drafting 3 ms (1 ms decoding), with every
/// token drafted and half of them (rounded down) accepted. With
/// `drift_on`, drafting changes its answer to that input.
#[derive(Default)]
struct FakeStudent {
    drift_on: Option<&'static str>,
}

impl StudentEngine for FakeStudent {
    fn tokenize(&self, text: &str) -> Result<Vec<u32>, StageError> {
        Ok(text.split_whitespace().map(|w| w.len() as u32).collect())
    }

    fn answer_all(
        &self,
        adapter: Option<&Path>,
        conversations: &[Vec<Message>],
        _: &Serving,
        drafting: &Drafting,
        on_answer: &(dyn Fn() + Sync),
    ) -> Result<Vec<StudentAnswer>, StageError> {
        let mut out = Vec::new();
        for c in conversations {
            let mut text = match adapter {
                Some(a) if a.exists() => answer(last_user(c)),
                Some(a) => return Err(format!("no adapter at {}", a.display()).into()),
                None => "I do not know.".to_owned(),
            };
            let tokens = text.len() as u32;
            let answer = match drafting {
                Drafting::Off => StudentAnswer {
                    text,
                    latency: Duration::from_millis(5),
                    tokens,
                    decode: Duration::from_millis(4),
                    draft: None,
                    mean_logprob: Some(-0.25),
                    token_ids: vec![1, 2, 3],
                },
                Drafting::Recipes(pack) => {
                    assert!(pack.stats().sequences > 0, "drafts with the mined pack");
                    if self.drift_on == Some(last_user(c)) {
                        text.push_str(" x");
                    }
                    StudentAnswer {
                        text,
                        latency: Duration::from_millis(3),
                        tokens,
                        decode: Duration::from_millis(1),
                        draft: Some(DraftCounts {
                            drafted: tokens,
                            accepted: tokens / 2,
                            steps: tokens - tokens / 2,
                        }),
                        mean_logprob: Some(-0.25),
                        token_ids: vec![1, 2, 3],
                    }
                }
            };
            out.push(answer);
            on_answer();
        }
        Ok(out)
    }
}

/// Writes an adapter per epoch (when asked) and the final one.
struct FakeTrainer;

impl AdapterTrainer for FakeTrainer {
    fn train(
        &self,
        conversations: &[Vec<Message>],
        params: HyperParams,
        out: &Path,
        epochs_dir: Option<&Path>,
        on_epoch: &mut OnEpoch<'_>,
        _: &dyn CompileProgress,
    ) -> Result<TrainSummary, StageError> {
        let bytes = format!("adapter rank {} of {}", params.rank, conversations.len());
        for epoch in 1..=params.epochs {
            if let Some(dir) = epochs_dir {
                std::fs::create_dir_all(dir)?;
                let path = dir.join(format!("epoch-{epoch}.gguf"));
                std::fs::write(&path, format!("{bytes}, epoch {epoch}"))?;
                if on_epoch(epoch, &path).is_break() {
                    break;
                }
            }
        }
        std::fs::write(out, &bytes)?;
        Ok(TrainSummary {
            first_loss: 2.0,
            last_loss: 0.5,
            steps: u64::from(params.epochs),
            tokens_per_second: 100.0,
            params: serde_json::json!({"rank": params.rank}),
        })
    }
}

/// A corpus whose index is a placeholder file and which grounds nothing;
/// counts the conversations it was asked to ground.
#[derive(Debug)]
struct FakeCorpus {
    index: PathBuf,
    grounded: AtomicUsize,
}

impl Grounding for FakeCorpus {
    fn build(&self, progress: &dyn CompileProgress) -> Result<IndexBuilt, StageError> {
        std::fs::write(&self.index, "index")?;
        progress.note("indexed 1 file");
        Ok(IndexBuilt {
            index: self.index.clone(),
            embedder_files: Vec::new(),
            sources: vec![DigestRef {
                name: "fruit.txt".into(),
                digest: format!("sha256:{}", "0".repeat(64)),
            }],
            summary: serde_json::json!({"files": 1, "chunks": 1}),
        })
    }

    fn ground(&self, messages: Vec<Message>) -> Result<Vec<Message>, StageError> {
        self.grounded.fetch_add(1, Ordering::SeqCst);
        Ok(messages)
    }

    fn best_similarity(&self, _: &[Message]) -> Result<Option<f64>, StageError> {
        Ok(Some(0.5))
    }
}

/// Every progress call, in order.
#[derive(Default)]
struct Events(Mutex<Vec<String>>);

impl Events {
    fn push(&self, event: String) {
        self.0.lock().unwrap().push(event);
    }
}

impl CompileProgress for Events {
    fn stage_started(&self, stage: Stage, total: u64) {
        self.push(format!("start {} {total}", stage.name()));
    }
    fn advance(&self, n: u64) {
        self.push(format!("advance {n}"));
    }
    fn note(&self, message: &str) {
        self.push(format!("note {message}"));
    }
    fn stage_finished(&self, stage: Stage, _: Duration) {
        self.push(format!("finish {}", stage.name()));
    }
}

/// A chat completion (the recorded shape) whose answer is `content`.
fn completion(content: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/openai_chat_completion.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v["choices"][0]["message"]["content"] = content.into();
    v.to_string()
}

/// The teacher: new inputs when asked for them, else the true answer for
/// the last user message.
async fn teach(body: Bytes) -> ([(&'static str, &'static str); 1], String) {
    let request: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let messages: Vec<Message> = request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| Message::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    let user = last_user(&messages);
    let text = if user.starts_with("Write ") && user.contains("new inputs") {
        serde_json::json!(["apricot", "quince", "apple"]).to_string()
    } else {
        answer(user)
    };
    ([("content-type", "application/json")], completion(&text))
}

async fn teacher() -> Arc<Teacher> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, axum::Router::new().fallback(teach))
            .await
            .unwrap();
    });
    let config = TeacherConfig::resolve(
        "openai:gpt-4o-mini",
        Some(&TeacherSettings {
            base_url: Some(format!("http://{addr}/v1")),
            backoff_secs: Some(0.01),
            timeout_secs: Some(5.0),
            ..Default::default()
        }),
        &BTreeMap::new(),
        None,
        |_| None,
    )
    .unwrap();
    Arc::new(
        Teacher::with_env(config, |var| {
            (var == "OPENAI_API_KEY").then(|| "sk-test".to_owned())
        })
        .unwrap(),
    )
}

fn example(word: &str) -> Example {
    Example {
        input: Input::Text(word.into()),
        output: Some(answer(word)),
        assertions: Vec::new(),
        origin: None,
    }
}

fn fruit() -> Task {
    let train = [
        "apple", "pear", "fig", "plum", "kiwi", "lime", "lemon", "mango", "peach", "grape",
        "melon", "cherry",
    ];
    Task {
        description: "Give the word and its length as JSON.".into(),
        train: train.into_iter().map(example).collect(),
        tests: ["banana", "orange", "papaya"]
            .into_iter()
            .map(example)
            .collect(),
        split: None,
        duplicates_dropped: 0,
        leaked_dropped: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stage_runs_in_order_and_leaves_one_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.gguf");
    std::fs::write(&base, "base").unwrap();
    let corpus = Arc::new(FakeCorpus {
        index: dir.path().join("index.sqlite"),
        grounded: AtomicUsize::new(0),
    });
    let mut options = CompileOptions::new(&base, dir.path());
    options.k = 2;
    options.synthesize = 3;
    options.grounding = Some(corpus.clone());
    options.candidates = vec![
        HyperParams {
            rank: 4,
            learning_rate: 1e-3,
            epochs: 3,
        },
        HyperParams {
            rank: 8,
            learning_rate: 1e-3,
            epochs: 2,
        },
    ];
    let events = Arc::new(Events::default());
    let task = fruit();
    let compiled = pipeline::compile(
        &task,
        teacher().await,
        Arc::new(FakeStudent::default()),
        Arc::new(FakeTrainer),
        &options,
        &ReceiptKey([7; 32]),
        events.clone(),
    )
    .await
    .unwrap();

    let order = [
        Stage::Index,
        Stage::Synthesize,
        Stage::Distill,
        Stage::Train,
        Stage::Decompose,
        Stage::Evaluate,
    ];
    let names: Vec<&str> = order.iter().map(|s| s.name()).collect();
    let events = events.0.lock().unwrap().clone();
    let marks: Vec<String> = events
        .iter()
        .filter(|e| e.starts_with("start ") || e.starts_with("finish "))
        .map(|e| e.split(' ').take(2).collect::<Vec<_>>().join(" "))
        .collect();
    let want: Vec<String> = names
        .iter()
        .flat_map(|n| [format!("start {n}"), format!("finish {n}")])
        .collect();
    assert_eq!(marks, want, "{events:#?}");
    // The totals announced: 3 inputs asked for, 8 + 2 examples to distill
    // (4 held out for validation; "apple" is a duplicate), 3 tests × 4
    // (the student twice, the base, the teacher).
    for announced in ["start index 0", "start synthesize 3", "start distill 10"] {
        assert!(events.iter().any(|e| e == announced), "{events:#?}");
    }
    assert!(
        events.iter().any(|e| e == "start evaluate 12"),
        "{events:#?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("note synthesized 2 of 3")),
        "{events:#?}"
    );

    // One receipt per stage, in order, linked.
    let steps: Vec<String> = compiled
        .receipts
        .receipts()
        .into_iter()
        .map(|r| r.step)
        .collect();
    assert_eq!(steps, names);
    ReceiptChain::parse(&compiled.receipts.to_jsonl()).unwrap();
    let times: Vec<Stage> = compiled.times.iter().map(|t| t.stage).collect();
    assert_eq!(times, order);

    // Validation chose between both candidates; the adapter shipped.
    let validation = compiled.validation.as_ref().unwrap();
    assert_eq!(validation.examples, 4);
    assert_eq!(validation.candidates.len(), 2);
    assert_eq!(validation.chosen, 0, "a tie goes to the earlier candidate");
    assert_eq!(
        std::fs::read_to_string(&compiled.adapter).unwrap(),
        "adapter rank 4 of 10, epoch 1"
    );
    assert_eq!(compiled.synthesis.as_ref().unwrap().kept, 2);
    assert_eq!(compiled.distill.examples, 10);
    assert_eq!(compiled.distill.from_teacher, 10);

    // Student right, base wrong, teacher right; every prompt grounded.
    assert_eq!(compiled.eval.pass_rates(), (1.0, 0.0, 1.0));
    assert!(compiled.params.contains_key("recall"));
    assert!(corpus.grounded.load(Ordering::SeqCst) > 0);

    // Drafting: each test records both decodes as the student gave them.
    let tokens: Vec<u32> = ["banana", "orange", "papaya"]
        .iter()
        .map(|w| answer(w).len() as u32)
        .collect();
    for (t, &n) in compiled.eval.tests.iter().zip(&tokens) {
        assert_eq!(
            t.drafting,
            Some(DecodeFigures {
                tokens: n,
                identical: true,
                undrafted_tokens: None,
                drafted: n,
                accepted: n / 2,
                steps: n - n / 2,
                drafted_decode_s: 0.001,
                undrafted_decode_s: 0.004,
                undrafted_latency_s: 0.005,
            })
        );
        // The student's answer is the drafted run's, latency included.
        assert_eq!(t.student.latency_s, 0.003);
    }
    // K's latency is the drafted run's (the mean of three 3 ms answers).
    let latency = compiled.kscore_inputs.student_latency_s;
    assert!((latency - 0.003).abs() < 1e-12, "{latency}");
    // The summary, by hand, and exactly the one in the manifest.
    let total: u32 = tokens.iter().sum();
    let accepted: u32 = tokens.iter().map(|n| n / 2).sum();
    let steps = total - accepted;
    let summary = compiled.eval.drafting().expect("drafting figures");
    assert_eq!(
        (summary.tests, summary.tokens, summary.drafted),
        (3, u64::from(total), u64::from(total))
    );
    assert_eq!(
        (summary.accepted, summary.steps),
        (u64::from(accepted), u64::from(steps))
    );
    assert_eq!(summary.accepted_per_step, accepted as f64 / steps as f64);
    assert_eq!(summary.tokens_per_step, total as f64 / steps as f64);
    let drafted_s = 0.001 + 0.001 + 0.001;
    let undrafted_s = 0.004 + 0.004 + 0.004;
    assert_eq!(summary.drafted_tokens_per_s, Some(total as f64 / drafted_s));
    assert_eq!(
        summary.undrafted_tokens_per_s,
        Some(total as f64 / undrafted_s)
    );
    assert_eq!(
        summary.speedup,
        Some((total as f64 / drafted_s) / (total as f64 / undrafted_s))
    );
    assert!((summary.speedup.unwrap() - 4.0).abs() < 1e-9);
    let recorded: DraftingSummary =
        serde_json::from_value(compiled.params["evaluation"]["drafting"].clone()).unwrap();
    assert_eq!(recorded, summary);
    // The eval pack on disk gives the same summary.
    let on_disk = pipeline::EvalPack::parse(&std::fs::read(&compiled.eval_file).unwrap()).unwrap();
    assert_eq!(on_disk.drafting(), Some(summary));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drafted_answer_that_differs_is_judged_as_served_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.gguf");
    std::fs::write(&base, "base").unwrap();
    let mut options = CompileOptions::new(&base, dir.path());
    options.k = 1;
    options.validation.share = 0.0;
    let compiled = pipeline::compile(
        &fruit(),
        teacher().await,
        Arc::new(FakeStudent {
            drift_on: Some("orange"),
        }),
        Arc::new(FakeTrainer),
        &options,
        &ReceiptKey([7; 32]),
        Arc::new(Events::default()),
    )
    .await
    .unwrap();
    let pack = pipeline::EvalPack::parse(&std::fs::read(&compiled.eval_file).unwrap()).unwrap();
    let orange = pack
        .tests
        .iter()
        .find(|t| t.input == Input::Text("orange".into()))
        .expect("the orange test");
    // The drafted answer (what kolmd serves) is the one judged.
    assert_eq!(orange.student.output, format!("{} x", answer("orange")));
    assert!(!orange.student.passed);
    let figures = orange.drafting.as_ref().unwrap();
    assert!(!figures.identical);
    assert_eq!(figures.undrafted_tokens, Some(figures.tokens));
    let summary = pack.drafting().unwrap();
    assert_eq!(
        (summary.identical, summary.tests),
        (pack.tests.len() - 1, pack.tests.len())
    );
    let recorded: DraftingSummary =
        serde_json::from_value(compiled.params["evaluation"]["drafting"].clone()).unwrap();
    assert_eq!(recorded, summary);
}

/// A trainer's own error, with a cause of its own.
#[derive(Debug, thiserror::Error)]
#[error("the adapter did not fit")]
struct DidNotFit(#[source] std::io::Error);

/// Fails every run with [`DidNotFit`].
struct BrokenTrainer;

impl AdapterTrainer for BrokenTrainer {
    fn train(
        &self,
        _: &[Vec<Message>],
        _: HyperParams,
        _: &Path,
        _: Option<&Path>,
        _: &mut OnEpoch<'_>,
        _: &dyn CompileProgress,
    ) -> Result<TrainSummary, StageError> {
        Err(DidNotFit(std::io::Error::other("out of memory")).into())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_stage_keeps_its_error_and_its_cause_and_is_not_reported_finished() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.gguf");
    std::fs::write(&base, "base").unwrap();
    let mut options = CompileOptions::new(&base, dir.path());
    options.k = 1;
    options.validation.share = 0.0;
    let events = Arc::new(Events::default());
    let e = pipeline::compile(
        &fruit(),
        teacher().await,
        Arc::new(FakeStudent::default()),
        Arc::new(BrokenTrainer),
        &options,
        &ReceiptKey([7; 32]),
        events.clone(),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, CompileError::Train(_)), "{e}");
    assert_eq!(e.to_string(), "training failed: the adapter did not fit");
    let cause = std::error::Error::source(&e).expect("the trainer's error is the source");
    assert!(cause.downcast_ref::<DidNotFit>().is_some(), "{cause}");
    let root = cause.source().expect("and its cause survives");
    assert_eq!(root.to_string(), "out of memory");

    let events = events.0.lock().unwrap();
    assert!(events.iter().any(|e| e == "start train 0"), "{events:#?}");
    assert!(!events.iter().any(|e| e == "finish train"), "{events:#?}");
}
