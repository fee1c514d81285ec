//! kolmd end to end over HTTP: the real binary on 127.0.0.1:0 serving real
//! SmolLM2 artifacts from a real store. Bad input gets OpenAI-shaped errors
//! and the daemon keeps serving; a client that hangs up frees its slot; a
//! full queue answers 503 at once; a non-loopback start without a key is
//! refused; SIGTERM lets a running request finish.

mod common;

use std::time::{Duration, Instant};

use common::{connect, eventually, read_response, request, send_head, Daemon};
use serde_json::{json, Value};

fn chat_body(model: &str, content: &str, max_tokens: i64) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
    })
}

#[test]
fn chat_completions_models_and_metrics() {
    let d = Daemon::start("");
    let health = d.get("/health");
    assert_eq!(health.status, 200, "{}", health.text());
    assert_eq!(health.json()["status"], "ok");

    let models = d.get("/v1/models").json();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"smollm2:0.1.0"), "{models}");
    assert_eq!(d.get("/v1/models/smollm2").json()["id"], "smollm2:0.1.0");
    d.get("/v1/models/nope").error(404);

    let r = d.post(
        "/v1/chat/completions",
        &chat_body("smollm2", "What is the capital of France?", 16),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    // SmolLM2's template adds its default system prompt, under which this
    // small model rambles; greedy output is still deterministic.
    assert!(!text.is_empty(), "{v}");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() <= 16);

    // Streaming gives the same greedy text, ends with [DONE], usage last.
    let mut body = chat_body("smollm2", "What is the capital of France?", 16);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let s = d.post("/v1/chat/completions", &body);
    assert_eq!(s.status, 200, "{}", s.text());
    assert!(s
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    let events = s.events();
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(streamed, text);
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(
        usage["completion_tokens"], v["usage"]["completion_tokens"],
        "{usage}"
    );

    // Text completions, streamed too.
    let c = d.post("/v1/completions", &json!({"model": "smollm2", "prompt": "The capital of France is", "max_tokens": 5, "temperature": 0}));
    assert_eq!(c.status, 200, "{}", c.text());
    let cv = c.json();
    assert_eq!(cv["object"], "text_completion");
    assert_eq!(cv["usage"]["completion_tokens"], 5);
    assert_eq!(cv["choices"][0]["finish_reason"], "length");
    let cs = d.post("/v1/completions", &json!({"model": "smollm2", "prompt": "The capital of France is", "max_tokens": 5, "temperature": 0, "stream": true}));
    let streamed: String = cs
        .events()
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| {
            serde_json::from_str::<Value>(e).unwrap()["choices"][0]["text"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert_eq!(streamed, cv["choices"][0]["text"].as_str().unwrap());

    // Embeddings: one normalised vector per input.
    let e = d.post(
        "/v1/embeddings",
        &json!({"model": "smollm2", "input": ["hello", "world"]}),
    );
    assert_eq!(e.status, 200, "{}", e.text());
    let ev = e.json();
    assert_eq!(ev["data"].as_array().unwrap().len(), 2);
    let vector: Vec<f64> = ev["data"][0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(vector.len(), 576);
    let norm: f64 = vector.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-3, "{norm}");

    let metrics = d.get("/metrics");
    assert_eq!(metrics.status, 200);
    let m = metrics.text();
    for needle in [
        "kolm_http_requests_total{route=\"/v1/chat/completions\",status=\"200\"} 2",
        "kolm_completion_tokens_total{model=\"smollm2:0.1.0\"}",
        "kolm_time_to_first_token_seconds_bucket",
        "kolm_time_per_output_token_seconds_count",
        "kolm_loaded_models 1",
        "kolm_queue_depth{model=\"smollm2:0.1.0\"} 0",
    ] {
        assert!(m.contains(needle), "{needle} missing from\n{m}");
    }
}

#[test]
fn bad_requests_get_openai_errors_and_the_daemon_keeps_serving() {
    let d = Daemon::start("max_body = \"64KiB\"");
    let good = || d.chat("smollm2", json!({}));
    good();

    let e = d
        .post_raw(
            "/v1/chat/completions",
            b"{\"model\": \"smollm2\", \"messages\": [",
        )
        .error(400);
    assert!(e["message"].as_str().unwrap().contains("JSON"), "{e}");
    good();

    let e = d
        .post("/v1/chat/completions", &chat_body("no-such-model", "hi", 4))
        .error(404);
    assert_eq!(e["code"], "model_not_found");

    let e = d
        .post(
            "/v1/chat/completions",
            &json!({"model": "smollm2", "messages": []}),
        )
        .error(400);
    assert_eq!(e["param"], "messages");

    let long = "word ".repeat(800);
    let e = d
        .post("/v1/chat/completions", &chat_body("smollm2", &long, 4))
        .error(400);
    assert_eq!(e["code"], "context_length_exceeded", "{e}");
    good();

    for bad in [0, -3, 1_000_000] {
        let e = d
            .post("/v1/chat/completions", &chat_body("smollm2", "hi", bad))
            .error(400);
        assert_eq!(e["param"], "max_tokens", "{e}");
    }

    let mut schema = chat_body("smollm2", "hi", 8);
    schema["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "no-such-type"}}});
    let e = d.post("/v1/chat/completions", &schema).error(400);
    assert_eq!(e["param"], "response_format", "{e}");
    good();

    let mut n2 = chat_body("smollm2", "hi", 4);
    n2["n"] = json!(2);
    d.post("/v1/chat/completions", &n2).error(400);

    let huge =
        json!({"model": "smollm2", "messages": [{"role": "user", "content": "x".repeat(100_000)}]});
    d.post("/v1/chat/completions", &huge).error(413);

    d.get("/v1/nothing-here").error(404);
    d.get("/v1/chat/completions").error(405);
    let e = d
        .post(
            "/v1/completions",
            &json!({"model": "smollm2", "prompt": "hi", "temperature": -1}),
        )
        .error(400);
    assert!(
        e["message"].as_str().unwrap().contains("temperature"),
        "{e}"
    );
    good();
    assert_eq!(d.get("/health").status, 200);
}

#[test]
fn a_client_that_hangs_up_frees_its_slot() {
    let d = Daemon::start("slots = 1\nqueue = 0");
    d.chat("smollm2", json!({}));
    // This machine's time per token, from a 64-token answer (loaded).
    let started = Instant::now();
    let r = d.post(
        "/v1/chat/completions",
        &chat_body("smollm2", "Write a long story about a dragon.", 64),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let tokens = r.json()["usage"]["completion_tokens"].as_u64().unwrap() as u32;
    let per_token = started.elapsed() / tokens.max(1);
    let mut body = chat_body("smollm2", "Write a long story about a dragon.", 400);
    body["stream"] = json!(true);
    let mut stream = connect(d.addr);
    send_head(
        &mut stream,
        "POST",
        "/v1/chat/completions",
        Some(body.to_string().as_bytes()),
        &[],
    );
    let mut buf = [0u8; 512];
    let n = std::io::Read::read(&mut stream, &mut buf).unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).contains("200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    drop(stream);
    // The only slot and no queue: this succeeds only once the slot is
    // free, and must long before the 390-odd tokens the abandoned answer
    // had left would end (150 tokens' time).
    let bound = per_token * 150;
    let start = Instant::now();
    let ok = eventually(bound, || {
        let r = d.post("/v1/chat/completions", &chat_body("smollm2", "hi", 4));
        r.status == 200
    });
    assert!(
        ok,
        "the slot was not freed within {bound:?} ({per_token:?} a token):\n{}",
        d.log()
    );
    assert!(start.elapsed() < bound);
}

#[test]
fn a_full_queue_answers_503_at_once_and_nothing_hangs() {
    let d = Daemon::start("slots = 1\nqueue = 8");
    d.chat("smollm2", json!({}));
    let addr = d.addr;
    let start = Instant::now();
    let handles: Vec<_> = (0..100)
        .map(|i| {
            std::thread::spawn(move || {
                let body = json!({"model": "smollm2", "prompt": format!("Count from {i}:"), "max_tokens": 8, "temperature": 0});
                let r = request(addr, "POST", "/v1/completions", Some(body.to_string().as_bytes()), &[]);
                (r.status, r.header("retry-after").map(str::to_owned), r.text())
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let elapsed = start.elapsed();
    let ok = results.iter().filter(|r| r.0 == 200).count();
    let busy: Vec<_> = results.iter().filter(|r| r.0 == 503).collect();
    assert_eq!(
        ok + busy.len(),
        100,
        "{:?}",
        results
            .iter()
            .filter(|r| r.0 != 200 && r.0 != 503)
            .collect::<Vec<_>>()
    );
    assert!(ok >= 9, "at least the slot and the queue are served: {ok}");
    assert!(
        !busy.is_empty(),
        "100 requests on 1 slot + 8 queued must overflow"
    );
    for b in &busy {
        assert_eq!(b.1.as_deref(), Some("1"), "Retry-After missing");
        assert!(b.2.contains("\"overloaded\""), "{}", b.2);
    }
    assert!(elapsed < Duration::from_secs(120), "took {elapsed:?}");
    d.chat("smollm2", json!({}));
}

#[test]
fn a_non_loopback_address_needs_an_api_key() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kolmd"))
        .args(["--listen", "0.0.0.0:0"])
        .env_remove("KOLM_API_KEY")
        .env_remove("KOLM_API_KEYS")
        .env("KOLM_HOME", common::home())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("API key") && err.contains("0.0.0.0"), "{err}");

    // With a key: 401 without it, 200 with it; /health stays open.
    let d = Daemon::start_with("", &[("KOLM_API_KEY", "sesame")]);
    request(d.addr, "GET", "/v1/models", None, &[]).error(401);
    request(
        d.addr,
        "GET",
        "/v1/models",
        None,
        &[("Authorization", "Bearer wrong")],
    )
    .error(401);
    let r = request(
        d.addr,
        "GET",
        "/v1/models",
        None,
        &[("Authorization", "Bearer sesame")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(d.get("/health").status, 200);
}

#[test]
fn sigterm_lets_the_running_request_finish_then_exits_0() {
    // A grace period far longer than the request needs, even on a loaded box.
    let mut d = Daemon::start("slots = 1\nshutdown_grace = \"180s\"");
    d.chat("smollm2", json!({}));
    let mut body = chat_body("smollm2", "Count from one to twenty.", 24);
    body["stream"] = json!(true);
    let mut stream = connect(d.addr);
    send_head(
        &mut stream,
        "POST",
        "/v1/chat/completions",
        Some(body.to_string().as_bytes()),
        &[],
    );
    let mut first = [0u8; 64];
    let n = std::io::Read::read(&mut stream, &mut first).unwrap();
    assert!(n > 0);
    let pid = d.child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let mut raw = first[..n].to_vec();
    let rest = read_response_bytes(&mut stream);
    raw.extend_from_slice(&rest);
    let r = common::parse_response(&raw);
    assert_eq!(
        r.events().last().map(String::as_str),
        Some("[DONE]"),
        "{}",
        r.text()
    );
    let start = Instant::now();
    let status = loop {
        if let Some(s) = d.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "kolmd did not exit"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}\n{}", d.log());
    // New connections are refused once it stopped.
    assert!(std::net::TcpStream::connect(d.addr).is_err());
    let _ = read_response;
}

fn read_response_bytes(stream: &mut std::net::TcpStream) -> Vec<u8> {
    let mut v = Vec::new();
    let _ = std::io::Read::read_to_end(stream, &mut v);
    v
}
