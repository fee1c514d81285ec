//! The distill stage's failure paths, through `pipeline::compile` with a
//! fake student engine and trainer (neither is reached: each case ends in
//! distillation) and a local HTTP server replaying recorded-shape OpenAI
//! responses as the teacher: the budget runs out, every sample of an example
//! fails, and every example is dropped.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kolm_artifact::receipts::ReceiptKey;
use kolm_artifact::serving::Serving;
use kolm_compile::example::{Example, Input, Message};
use kolm_compile::pipeline::{
    self, AdapterTrainer, CompileError, CompileOptions, CompileProgress, Drafting, HyperParams,
    OnEpoch, StageError, StudentAnswer, StudentEngine, TrainSummary,
};
use kolm_compile::task::Task;
use kolm_compile::teacher::{Price, Teacher, TeacherConfig, TeacherError, TeacherSettings};

/// Tokens are words; answering or training is a bug in these cases.
struct FakeStudent;

impl StudentEngine for FakeStudent {
    fn tokenize(&self, text: &str) -> Result<Vec<u32>, StageError> {
        Ok(text.split_whitespace().map(|w| w.len() as u32).collect())
    }

    fn answer_all(
        &self,
        _: Option<&Path>,
        _: &[Vec<Message>],
        _: &Serving,
        _: &Drafting,
        _: &(dyn Fn() + Sync),
    ) -> Result<Vec<StudentAnswer>, StageError> {
        Err("the student must not be asked: distillation failed first".into())
    }
}

struct FakeTrainer;

impl AdapterTrainer for FakeTrainer {
    fn train(
        &self,
        _: &[Vec<Message>],
        _: HyperParams,
        _: &Path,
        _: Option<&Path>,
        _: &mut OnEpoch<'_>,
        _: &dyn CompileProgress,
    ) -> Result<TrainSummary, StageError> {
        Err("the trainer must not run: distillation failed first".into())
    }
}

/// Collects the notes.
#[derive(Default)]
struct Notes(Mutex<Vec<String>>);

impl CompileProgress for Notes {
    fn note(&self, message: &str) {
        self.0.lock().unwrap().push(message.to_owned());
    }
}

/// One canned reply for every request; counts them.
struct Script {
    status: StatusCode,
    body: String,
    requests: AtomicUsize,
}

async fn reply(State(s): State<Arc<Script>>) -> Response {
    s.requests.fetch_add(1, Ordering::SeqCst);
    (
        s.status,
        [("content-type", "application/json")],
        s.body.clone(),
    )
        .into_response()
}

async fn serve(status: StatusCode, body: String) -> (String, Arc<Script>) {
    let script = Arc::new(Script {
        status,
        body,
        requests: AtomicUsize::new(0),
    });
    let app = axum::Router::new()
        .fallback(reply)
        .with_state(script.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}/v1"), script)
}

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A chat completion (the recorded shape) whose answer is `content`.
fn completion(content: &str) -> String {
    let mut v: serde_json::Value =
        serde_json::from_str(&fixture("openai_chat_completion.json")).unwrap();
    v["choices"][0]["message"]["content"] = content.into();
    v.to_string()
}

fn teacher(base_url: String, max_cost: Option<f64>) -> Arc<Teacher> {
    let config = TeacherConfig::resolve(
        "openai:gpt-4o-mini",
        Some(&TeacherSettings {
            base_url: Some(base_url),
            backoff_secs: Some(0.01),
            timeout_secs: Some(5.0),
            // One request at a time: the budget is checked before each.
            concurrency: Some(1),
            ..Default::default()
        }),
        &BTreeMap::from([(
            "gpt-4o-mini".to_string(),
            Price {
                input_per_mtok: 0.15,
                output_per_mtok: 0.60,
            },
        )]),
        max_cost,
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

fn example(input: &str, output: Option<&str>) -> Example {
    Example {
        input: Input::Text(input.into()),
        output: output.map(str::to_owned),
        assertions: Vec::new(),
        origin: None,
    }
}

/// Orders → `{"item","qty"}`: four training examples, two tests.
fn orders(train_outputs: bool) -> Task {
    let out = |s: &'static str| train_outputs.then_some(s);
    Task {
        description: "Turn the order into JSON with item and qty.".into(),
        train: vec![
            example("two apples please", out(r#"{"item":"apple","qty":2}"#)),
            example("three pears", out(r#"{"item":"pear","qty":3}"#)),
            example("one fig", out(r#"{"item":"fig","qty":1}"#)),
            example("five plums, thanks", out(r#"{"item":"plum","qty":5}"#)),
        ],
        tests: vec![
            example("four kiwis", Some(r#"{"item":"kiwi","qty":4}"#)),
            example("six limes", Some(r#"{"item":"lime","qty":6}"#)),
        ],
        split: None,
        duplicates_dropped: 0,
        leaked_dropped: 0,
    }
}

async fn compile(task: &Task, teacher: Arc<Teacher>, notes: Arc<Notes>) -> CompileError {
    let dir = tempfile::tempdir().unwrap();
    let mut options = CompileOptions::new(dir.path().join("base.gguf"), dir.path());
    options.k = 2;
    options.validation.share = 0.0;
    match pipeline::compile(
        task,
        teacher,
        Arc::new(FakeStudent),
        Arc::new(FakeTrainer),
        &options,
        &ReceiptKey([7; 32]),
        notes,
    )
    .await
    {
        Ok(_) => panic!("the compile was meant to fail in distillation"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn a_budget_that_runs_out_stops_the_compile_saying_how_far_it_got() {
    let (url, script) = serve(StatusCode::OK, completion(r#"{"item":"apple","qty":2}"#)).await;
    // One answer costs $0.0000152 (57 tokens in, 11 out): the budget is
    // passed after the second, so the third is refused.
    let e = compile(&orders(true), teacher(url, Some(0.00002)), Arc::default()).await;
    match &e {
        CompileError::Budget { source, done } => {
            assert!(
                matches!(source, TeacherError::BudgetExhausted { .. }),
                "{source}"
            );
            assert!(done.contains("of 4 training examples"), "{done}");
        }
        other => panic!("expected the budget error, got {other}"),
    }
    assert!(
        script.requests.load(Ordering::SeqCst) < 8,
        "it stopped asking"
    );
}

#[tokio::test]
async fn a_teacher_whose_every_sample_fails_is_an_error_not_a_silent_fallback() {
    let (url, _) = serve(StatusCode::BAD_REQUEST, fixture("openai_error_401.json")).await;
    let e = compile(&orders(true), teacher(url, None), Arc::default()).await;
    assert!(
        matches!(e, CompileError::Teacher(_)),
        "the references must not be trained on without a word: {e}"
    );
}

#[tokio::test]
async fn examples_without_a_passing_sample_or_a_reference_are_dropped_and_named() {
    // The teacher answers prose; the verifier (JSON, from the tests) fails
    // every sample, and the examples carry no reference to fall back on.
    let (url, _) = serve(StatusCode::OK, completion("Sure! Here is your order.")).await;
    let notes = Arc::new(Notes::default());
    let e = compile(&orders(false), teacher(url, None), notes.clone()).await;
    match &e {
        CompileError::NothingToTrain(what) => {
            assert!(what.contains("4 example(s) dropped"), "{what}")
        }
        other => panic!("expected nothing to train, got {other}"),
    }
    let notes = notes.0.lock().unwrap();
    assert_eq!(
        notes.iter().filter(|n| n.starts_with("dropped ")).count(),
        4,
        "{notes:?}"
    );
}
