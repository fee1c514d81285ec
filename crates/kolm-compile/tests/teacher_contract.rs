//! Contract tests of the teacher clients against a local HTTP server on
//! 127.0.0.1:0 that replays recorded-shape OpenAI and Anthropic responses
//! (tests/fixtures/): success, 429 with Retry-After, 5xx then success, a
//! malformed body, a timeout, the cache, cost accounting and the budget.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use kolm_compile::example::Message;
use kolm_compile::teacher::{
    ChatRequest, MalformedResponse, Price, Teacher, TeacherConfig, TeacherError, TeacherSettings,
};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    delay: Duration,
}

impl Reply {
    fn ok(name: &str) -> Reply {
        Reply {
            status: 200,
            headers: vec![],
            body: fixture(name),
            delay: Duration::ZERO,
        }
    }

    fn status(status: u16, name: &str) -> Reply {
        Reply {
            status,
            ..Reply::ok(name)
        }
    }

    fn header(mut self, k: &'static str, v: &str) -> Reply {
        self.headers.push((k, v.to_owned()));
        self
    }

    fn delayed(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }
}

struct Seen {
    path: String,
    headers: HeaderMap,
    body: serde_json::Value,
    at: Instant,
}

#[derive(Default)]
struct Script {
    replies: Mutex<VecDeque<Reply>>,
    /// Served once the queue is empty.
    fallback: Mutex<Option<Reply>>,
    seen: Mutex<Vec<Seen>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl Script {
    fn requests(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

async fn handle(State(s): State<Arc<Script>>, req: Request) -> Response {
    let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    s.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let path = req.uri().path().to_owned();
    let headers = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), usize::MAX)
        .await
        .unwrap();
    s.seen.lock().unwrap().push(Seen {
        path,
        headers,
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        at: Instant::now(),
    });
    let reply = {
        let next = s.replies.lock().unwrap().pop_front();
        next.or_else(|| s.fallback.lock().unwrap().clone())
    }
    .unwrap_or_else(|| Reply {
        status: 418,
        headers: vec![],
        body: b"script exhausted".to_vec(),
        delay: Duration::ZERO,
    });
    tokio::time::sleep(reply.delay).await;
    s.in_flight.fetch_sub(1, Ordering::SeqCst);
    let mut r = Response::builder()
        .status(StatusCode::from_u16(reply.status).unwrap())
        .header("content-type", "application/json");
    for (k, v) in reply.headers {
        r = r.header(k, v);
    }
    r.body(Body::from(reply.body)).unwrap()
}

/// Starts the replay server; returns its base address and the script.
async fn serve(replies: Vec<Reply>, fallback: Option<Reply>) -> (String, Arc<Script>) {
    let script = Arc::new(Script {
        replies: Mutex::new(replies.into()),
        fallback: Mutex::new(fallback),
        ..Default::default()
    });
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(script.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}"), script)
}

struct Setup {
    spec: &'static str,
    settings: TeacherSettings,
    prices: BTreeMap<String, Price>,
    max_cost: Option<f64>,
}

fn openai(base: &str) -> Setup {
    Setup {
        spec: "openai:gpt-4o-mini",
        settings: TeacherSettings {
            base_url: Some(format!("{base}/v1")),
            backoff_secs: Some(0.01),
            timeout_secs: Some(5.0),
            ..Default::default()
        },
        prices: BTreeMap::from([(
            "gpt-4o-mini".to_string(),
            Price {
                input_per_mtok: 0.15,
                output_per_mtok: 0.60,
            },
        )]),
        max_cost: None,
    }
}

fn anthropic(base: &str) -> Setup {
    Setup {
        spec: "anthropic:claude-3-5-haiku-20241022",
        settings: TeacherSettings {
            base_url: Some(base.to_string()),
            backoff_secs: Some(0.01),
            timeout_secs: Some(5.0),
            ..Default::default()
        },
        prices: BTreeMap::from([(
            "claude-3-5-haiku-20241022".to_string(),
            Price {
                input_per_mtok: 0.80,
                output_per_mtok: 4.00,
            },
        )]),
        max_cost: None,
    }
}

impl Setup {
    fn build(&self) -> Teacher {
        let config = TeacherConfig::resolve(
            self.spec,
            Some(&self.settings),
            &self.prices,
            self.max_cost,
            |_| None,
        )
        .unwrap();
        Teacher::with_env(config, |var| match var {
            "OPENAI_API_KEY" => Some("sk-test-openai".into()),
            "ANTHROPIC_API_KEY" => Some("sk-ant-test".into()),
            _ => None,
        })
        .unwrap()
    }
}

fn request(seed: u64) -> ChatRequest {
    ChatRequest {
        messages: vec![
            Message::new("system", "Turn the order into JSON."),
            Message::new("user", "two apples please"),
        ],
        temperature: 0.7,
        max_tokens: 128,
        seed: Some(seed),
    }
}

#[tokio::test]
async fn openai_success_sends_the_wire_shape_and_accounts_cost() {
    let (base, script) = serve(vec![Reply::ok("openai_chat_completion.json")], None).await;
    let t = openai(&base).build();
    let c = t.complete(&request(1)).await.unwrap();
    assert_eq!(c.text, r#"{"item":"apple","qty":2}"#);
    assert_eq!(c.finish_reason.as_deref(), Some("stop"));
    assert_eq!((c.input_tokens, c.output_tokens, c.attempts), (57, 11, 1));
    let want = (57.0 * 0.15 + 11.0 * 0.60) / 1e6;
    assert!((c.cost_usd - want).abs() < 1e-15, "{}", c.cost_usd);
    assert!(!c.cached);

    let seen = script.seen.lock().unwrap();
    let s = &seen[0];
    assert_eq!(s.path, "/v1/chat/completions");
    assert_eq!(s.headers["authorization"], "Bearer sk-test-openai");
    assert_eq!(s.body["model"], "gpt-4o-mini");
    assert_eq!(s.body["messages"][0]["role"], "system");
    assert_eq!(s.body["messages"][1]["content"], "two apples please");
    assert_eq!(s.body["max_tokens"], 128);
    assert_eq!(s.body["seed"], 1);
    let a = t.accounting();
    assert_eq!(
        (
            a.calls,
            a.requests,
            a.cache_hits,
            a.input_tokens,
            a.output_tokens
        ),
        (1, 1, 0, 57, 11)
    );
    assert!((a.cost_usd - want).abs() < 1e-15);
}

#[tokio::test]
async fn anthropic_success_moves_system_and_sends_version() {
    let (base, script) = serve(vec![Reply::ok("anthropic_message.json")], None).await;
    let t = anthropic(&base).build();
    let c = t.complete(&request(1)).await.unwrap();
    assert_eq!(c.text, r#"{"item":"pear","qty":1}"#);
    assert_eq!(c.finish_reason.as_deref(), Some("end_turn"));
    assert_eq!((c.input_tokens, c.output_tokens), (64, 12));
    assert!((c.cost_usd - (64.0 * 0.8 + 12.0 * 4.0) / 1e6).abs() < 1e-15);
    let seen = script.seen.lock().unwrap();
    let s = &seen[0];
    assert_eq!(s.path, "/v1/messages");
    assert_eq!(s.headers["x-api-key"], "sk-ant-test");
    assert_eq!(s.headers["anthropic-version"], "2023-06-01");
    assert!(s.headers.get("authorization").is_none());
    assert_eq!(s.body["system"], "Turn the order into JSON.");
    assert_eq!(s.body["messages"].as_array().unwrap().len(), 1);
    assert_eq!(s.body["messages"][0]["role"], "user");
    assert!(s.body.get("seed").is_none());
}

#[tokio::test]
async fn rate_limit_waits_for_retry_after() {
    for (setup, limited, ok) in [
        (
            openai as fn(&str) -> Setup,
            "openai_error_429.json",
            "openai_chat_completion.json",
        ),
        (
            anthropic,
            "anthropic_error_429.json",
            "anthropic_message.json",
        ),
    ] {
        let (base, script) = serve(
            vec![
                Reply::status(429, limited).header("retry-after", "1"),
                Reply::ok(ok),
            ],
            None,
        )
        .await;
        let mut s = setup(&base);
        // A back-off far longer than Retry-After: the wait must come from the header.
        s.settings.backoff_secs = Some(8.0);
        let t = s.build();
        let started = Instant::now();
        let c = t.complete(&request(1)).await.unwrap();
        let waited = {
            let seen = script.seen.lock().unwrap();
            seen[1].at - seen[0].at
        };
        assert!(waited >= Duration::from_millis(950), "{waited:?}");
        assert!(waited < Duration::from_millis(2500), "{waited:?}");
        assert!(started.elapsed() < Duration::from_secs(4));
        assert_eq!(c.attempts, 2);
        let a = t.accounting();
        assert_eq!((a.calls, a.requests, a.retries), (1, 2, 1));
    }
}

#[tokio::test]
async fn server_errors_are_retried_then_succeed() {
    let (base, script) = serve(
        vec![
            Reply::status(500, "openai_error_500.json"),
            Reply::status(503, "openai_error_500.json"),
            Reply::ok("openai_chat_completion.json"),
        ],
        None,
    )
    .await;
    let t = openai(&base).build();
    let c = t.complete(&request(1)).await.unwrap();
    assert_eq!(c.attempts, 3);
    assert_eq!(script.requests(), 3);

    let (base, _) = serve(
        vec![
            Reply::status(529, "anthropic_error_529.json"),
            Reply::ok("anthropic_message.json"),
        ],
        None,
    )
    .await;
    let t = anthropic(&base).build();
    assert_eq!(t.complete(&request(1)).await.unwrap().attempts, 2);
}

#[tokio::test]
async fn retries_run_out_with_a_clear_error() {
    let (base, script) = serve(vec![], Some(Reply::status(529, "anthropic_error_529.json"))).await;
    let mut s = anthropic(&base);
    s.settings.max_retries = Some(2);
    let t = s.build();
    let e = t.complete(&request(1)).await.unwrap_err();
    match &e {
        TeacherError::Http {
            status,
            attempts,
            message,
            ..
        } => {
            assert_eq!((*status, *attempts), (529, 3));
            assert_eq!(message, "overloaded_error: Overloaded");
        }
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains("HTTP 529 after 3 attempt(s)"), "{e}");
    assert_eq!(script.requests(), 3);
    let a = t.accounting();
    assert_eq!((a.calls, a.failures, a.cost_usd), (0, 1, 0.0));
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let (base, script) = serve(vec![], Some(Reply::status(401, "openai_error_401.json"))).await;
    let t = openai(&base).build();
    let e = t.complete(&request(1)).await.unwrap_err();
    assert!(
        matches!(
            e,
            TeacherError::Http {
                status: 401,
                attempts: 1,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("invalid_request_error: Incorrect API key"),
        "{e}"
    );
    assert_eq!(script.requests(), 1);
}

#[tokio::test]
async fn malformed_bodies_are_clear_errors() {
    for (setup, file, want) in [
        (
            openai as fn(&str) -> Setup,
            "openai_malformed.json",
            "missing field `choices`",
        ),
        (
            anthropic,
            "anthropic_malformed.json",
            "no text content block",
        ),
    ] {
        let (base, script) = serve(vec![], Some(Reply::ok(file))).await;
        let t = setup(&base).build();
        let e = t.complete(&request(1)).await.unwrap_err();
        match &e {
            TeacherError::Malformed { reason, .. } => assert!(
                matches!(
                    (file, reason),
                    ("openai_malformed.json", MalformedResponse::Json(_))
                        | ("anthropic_malformed.json", MalformedResponse::NoTextBlock)
                ),
                "{reason:?}"
            ),
            other => panic!("{other}"),
        }
        assert!(e.to_string().contains(want), "{e}");
        assert!(e.to_string().contains("malformed response"), "{e}");
        assert_eq!(script.requests(), 1, "a malformed 2xx body is not retried");
    }
    let (base, _) = serve(
        vec![],
        Some(Reply {
            body: b"<html>bad gateway</html>".to_vec(),
            ..Reply::ok("openai_chat_completion.json")
        }),
    )
    .await;
    let e = openai(&base)
        .build()
        .complete(&request(1))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("<html>bad gateway"), "{e}");
}

#[tokio::test]
async fn timeouts_are_clear_errors() {
    let (base, script) = serve(
        vec![],
        Some(Reply::ok("openai_chat_completion.json").delayed(Duration::from_secs(3))),
    )
    .await;
    let mut s = openai(&base);
    s.settings.timeout_secs = Some(0.3);
    s.settings.max_retries = Some(1);
    let t = s.build();
    let started = Instant::now();
    let e = t.complete(&request(1)).await.unwrap_err();
    assert!(
        matches!(e, TeacherError::Timeout { attempts: 2, .. }),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("no answer within 300ms (2 attempt(s))"),
        "{e}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(script.requests(), 2);
}

#[tokio::test]
async fn an_unreachable_teacher_is_a_clear_error() {
    // Bind then drop a listener: nothing listens on that port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut s = openai(&format!("http://127.0.0.1:{port}"));
    s.settings.max_retries = Some(1);
    let e = s.build().complete(&request(1)).await.unwrap_err();
    assert!(
        matches!(e, TeacherError::Unreachable { attempts: 2, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("cannot reach the teacher"), "{e}");
}

#[tokio::test]
async fn the_cache_answers_repeats_without_http() {
    let dir = tempfile::tempdir().unwrap();
    let (base, script) = serve(vec![], Some(Reply::ok("openai_chat_completion.json"))).await;
    let mut s = openai(&base);
    s.settings.cache_dir = Some(dir.path().to_owned());
    let t = s.build();
    let first = t.complete(&request(1)).await.unwrap();
    let second = t.complete(&request(1)).await.unwrap();
    assert_eq!(script.requests(), 1, "the repeat made no HTTP request");
    assert!(second.cached && !first.cached);
    assert_eq!(
        (second.text.as_str(), second.cost_usd, second.attempts),
        (first.text.as_str(), 0.0, 0)
    );
    // Another seed is another sample: a new call.
    t.complete(&request(2)).await.unwrap();
    assert_eq!(script.requests(), 2);
    let a = t.accounting();
    assert_eq!((a.calls, a.cache_hits), (2, 1));

    // A new client (a recompile) reuses the cache on disk: zero requests.
    let t2 = s.build();
    t2.complete(&request(1)).await.unwrap();
    t2.complete(&request(2)).await.unwrap();
    assert_eq!(script.requests(), 2);
    assert_eq!(t2.accounting().cache_hits, 2);
    // No temporary files are left behind.
    let leftovers = walk(dir.path())
        .into_iter()
        .filter(|p| !p.ends_with(".json"))
        .count();
    assert_eq!(leftovers, 0);

    // no_cache bypasses it.
    s.settings.no_cache = Some(true);
    let t3 = s.build();
    t3.complete(&request(1)).await.unwrap();
    assert_eq!(script.requests(), 3);
    assert_eq!(t3.accounting().cache_hits, 0);

    // The cache is keyed by base URL and model too.
    let (base2, script2) = serve(vec![], Some(Reply::ok("openai_chat_completion.json"))).await;
    let mut other = openai(&base2);
    other.settings.cache_dir = Some(dir.path().to_owned());
    other.build().complete(&request(1)).await.unwrap();
    assert_eq!(script2.requests(), 1);
}

#[tokio::test]
async fn a_local_kolmd_needs_no_key_and_may_be_unpriced() {
    let (base, script) = serve(
        vec![
            Reply::ok("kolmd_chat_completion.json"),
            Reply::ok("openai_compatible_no_usage.json"),
        ],
        None,
    )
    .await;
    let config = TeacherConfig::resolve(
        "openai:orders",
        Some(&TeacherSettings {
            base_url: Some(format!("{base}/v1")),
            api_key_env: Some(String::new()),
            ..Default::default()
        }),
        &BTreeMap::new(),
        None,
        |_| None,
    )
    .unwrap();
    // No variable is read: the environment has none.
    let t = Teacher::with_env(config, |_| None).unwrap();
    let c = t.complete(&request(1)).await.unwrap();
    assert_eq!((c.input_tokens, c.output_tokens, c.cost_usd), (41, 9, 0.0));
    assert!(script.seen.lock().unwrap()[0]
        .headers
        .get("authorization")
        .is_none());
    // A server that omits usage is accepted when the model has no price...
    let c = t.complete(&request(2)).await.unwrap();
    assert_eq!((c.input_tokens, c.output_tokens), (0, 0));

    // ...and refused when it has one: the budget could not be kept.
    let (base, _) = serve(vec![], Some(Reply::ok("openai_compatible_no_usage.json"))).await;
    let e = openai(&base)
        .build()
        .complete(&request(1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            TeacherError::Malformed {
                reason: MalformedResponse::Unmetered { .. },
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("has no usage"), "{e}");
}

#[tokio::test]
async fn an_unwritable_cache_does_not_lose_a_paid_answer() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let (base, script) = serve(vec![], Some(Reply::ok("openai_chat_completion.json"))).await;
    let mut s = openai(&base);
    s.settings.cache_dir = Some(file);
    let t = s.build();
    let c = t.complete(&request(1)).await.unwrap();
    assert_eq!(c.text, r#"{"item":"apple","qty":2}"#);
    assert_eq!(t.accounting().cache_write_errors, 1);
    assert_eq!(script.requests(), 1);
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.to_string_lossy().into_owned());
        }
    }
    out
}

#[tokio::test]
async fn max_cost_stops_cleanly_with_the_accounting() {
    let (base, script) = serve(vec![], Some(Reply::ok("anthropic_message.json"))).await;
    let per_call = (64.0 * 0.8 + 12.0 * 4.0) / 1e6;
    let mut s = anthropic(&base);
    s.max_cost = Some(per_call * 1.5);
    let t = s.build();
    t.complete(&request(1)).await.unwrap();
    t.complete(&request(2)).await.unwrap();
    let e = t.complete(&request(3)).await.unwrap_err();
    match &e {
        TeacherError::BudgetExhausted { spent, max_cost } => {
            assert_eq!(spent.calls, 2);
            assert!((spent.cost_usd - 2.0 * per_call).abs() < 1e-15);
            assert!(*max_cost > 0.0);
        }
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains("budget of $"), "{e}");
    assert!(e.to_string().contains("2 call(s)"), "{e}");
    assert_eq!(script.requests(), 2, "no request after the budget is spent");

    // A zero budget makes no call at all.
    let mut s = anthropic(&base);
    s.max_cost = Some(0.0);
    assert!(matches!(
        s.build().complete(&request(1)).await,
        Err(TeacherError::BudgetExhausted { .. })
    ));
    assert_eq!(script.requests(), 2);
}

#[tokio::test]
async fn sample_k_draws_k_seeded_samples_and_replays_them_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let (base, script) = serve(vec![], Some(Reply::ok("openai_chat_completion.json"))).await;
    let mut s = openai(&base);
    s.settings.cache_dir = Some(dir.path().to_owned());
    let t = Arc::new(s.build());
    let msgs = request(0).messages;
    let out = t.sample_k(&msgs, 4, 0.8, 64).await;
    assert_eq!(out.len(), 4);
    assert!(out.iter().all(|r| r.as_ref().is_ok_and(|c| !c.cached)));
    let mut seeds: Vec<u64> = script
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.body["seed"].as_u64().unwrap())
        .collect();
    seeds.sort_unstable();
    assert_eq!(seeds, [0, 1, 2, 3]);
    let again = Arc::new(s.build()).sample_k(&msgs, 4, 0.8, 64).await;
    assert!(again.iter().all(|r| r.as_ref().is_ok_and(|c| c.cached)));
    assert_eq!(script.requests(), 4, "a recompile makes zero teacher calls");
}

#[tokio::test]
async fn concurrency_is_bounded() {
    let (base, script) = serve(
        vec![],
        Some(Reply::ok("openai_chat_completion.json").delayed(Duration::from_millis(150))),
    )
    .await;
    let mut s = openai(&base);
    s.settings.concurrency = Some(2);
    let t = Arc::new(s.build());
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let t = t.clone();
            tokio::spawn(async move { t.complete(&request(i)).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(script.requests(), 6);
    assert_eq!(script.max_in_flight.load(Ordering::SeqCst), 2);
}
