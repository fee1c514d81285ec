//! A scripted teacher: a TEST DOUBLE, never quoted as quality.
//!
//! The pipeline's synthesis and labelling cannot be shown with the SmolLM2
//! fixture as teacher (it labels almost nothing correctly), and no capable
//! model is reachable here. This is a loopback OpenAI-compatible server
//! that implements the meetings task's rule (a name and a time in, `{"who",
//! "time"}` with a 24-hour time out) and writes synthetic inputs when asked
//! for them, so the tests can check what the compiler does with a teacher
//! that is right: what it keeps, what it drops, and what it caches.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

/// The names the rule knows.
pub const NAMES: &[&str] = &[
    "Ana", "Bo", "Cy", "Dee", "Eli", "Fay", "Gus", "Hal", "Ivy", "Jo", "Kai", "Lu", "Mo", "Ned",
];

/// The running test double.
pub struct ScriptedTeacher {
    pub addr: SocketAddr,
    /// Requests answered.
    pub requests: Arc<AtomicUsize>,
}

impl ScriptedTeacher {
    /// Starts it on 127.0.0.1:0; it lives until the test process ends.
    pub fn start() -> ScriptedTeacher {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let count = Arc::clone(&count);
                std::thread::spawn(move || serve(stream, &count));
            }
        });
        ScriptedTeacher { addr, requests }
    }

    /// The base URL for `teacher_config.base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

fn serve(stream: TcpStream, count: &AtomicUsize) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        // Request line and headers; a closed connection ends the loop.
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        count.fetch_add(1, Ordering::SeqCst);
        let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let text = answer(&request);
        let response = json!({
            "id": "scripted", "object": "chat.completion", "created": 0,
            "model": request["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 50, "completion_tokens": 12, "total_tokens": 62},
        })
        .to_string();
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            response.len()
        );
        if writer.write_all(head.as_bytes()).is_err()
            || writer.write_all(response.as_bytes()).is_err()
        {
            return;
        }
    }
}

/// The reply to one chat request: synthetic inputs when asked for them,
/// else the rule applied to the last user message.
fn answer(request: &Value) -> String {
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_owned();
    if let Some(rest) = last_user.strip_prefix("Write ") {
        let n: usize = rest
            .split_whitespace()
            .next()
            .and_then(|w| w.parse().ok())
            .unwrap_or(1);
        let set: u64 = rest
            .split("(set ")
            .nth(1)
            .and_then(|r| r.split(')').next())
            .and_then(|d| d.parse().ok())
            .unwrap_or(0);
        let mut inputs = synthetic_inputs(n, set);
        // Like real teachers, it sometimes repeats an example it was shown:
        // the first input of set 0 is the first example's.
        let shown = messages
            .iter()
            .filter_map(|m| m["content"].as_str())
            .find_map(|c| c.lines().find_map(|l| l.strip_prefix("Input: ")));
        if let (0, Some(example), Some(first)) = (set, shown, inputs.first_mut()) {
            *first = example.to_owned();
        }
        return inputs
            .iter()
            .map(|s| Value::String(s.clone()).to_string())
            .collect::<Vec<_>>()
            .join("\n");
    }
    match rule(&last_user) {
        Some(v) => v.to_string(),
        None => "I could not find a meeting in that.".into(),
    }
}

/// The task's rule: the first known name, and the first time (`9:15`,
/// `21.30`, `9h15`, `7pm`, `7:05 p.m.`) as 24-hour `HH:MM`.
pub fn rule(text: &str) -> Option<Value> {
    let words: Vec<String> = text
        .split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric() && c != ':' && c != '.')
                .trim_end_matches('.')
                .to_owned()
        })
        .collect();
    let who = words.iter().find_map(|w| {
        // `Ned:` and `Mo:` name people too.
        let w = w.trim_matches(|c: char| !c.is_alphanumeric());
        NAMES
            .iter()
            .find(|n| w.eq_ignore_ascii_case(n))
            .map(|n| n.to_string())
    })?;
    let mut time = None;
    for (i, w) in words.iter().enumerate() {
        let lower = w.to_lowercase();
        let (clock, suffix) = match lower.find(|c: char| c.is_ascii_alphabetic() && c != 'h') {
            Some(p) => (&lower[..p], lower[p..].replace('.', "")),
            None => (lower.as_str(), String::new()),
        };
        let suffix = if suffix.is_empty() {
            words
                .get(i + 1)
                .map(|n| n.to_lowercase().replace('.', ""))
                .filter(|n| n == "am" || n == "pm")
                .unwrap_or_default()
        } else {
            suffix
        };
        let parts: Vec<&str> = clock.split([':', '.', 'h']).collect();
        let (h, m) = match parts.as_slice() {
            [h] if !suffix.is_empty() => match h.parse::<u32>() {
                Ok(h) => (h, 0),
                Err(_) => continue,
            },
            [h, m] if m.len() == 2 => match (h.parse::<u32>(), m.parse::<u32>()) {
                (Ok(h), Ok(m)) => (h, m),
                _ => continue,
            },
            _ => continue,
        };
        let h = match suffix.as_str() {
            "pm" if h < 12 => h + 12,
            "am" if h == 12 => 0,
            _ => h,
        };
        if h < 24 && m < 60 {
            time = Some(format!("{h:02}:{m:02}"));
            break;
        }
    }
    Some(json!({"who": who, "time": time?}))
}

/// `n` inputs for set `set`, in phrasings the example files do not use,
/// with the time spellings the synthesis request asks for (12- and 24-hour,
/// with and without minutes, `p.m.`, `21.30`, `9h30`), as a capable teacher
/// would write them. They are generated from templates of this file's own,
/// not from the unseen test file.
pub fn synthetic_inputs(n: usize, set: u64) -> Vec<String> {
    const FORMS: &[&str] = &[
        "{time} w/ {who} pls",
        "{who} - {time} - quick sync",
        "can u do {time} with {who}??",
        "sync {who} @ {time}",
        "{time}, {who}, standup",
        "pencil in {who} for {time} thx",
        "need {who} at {time} re budget",
        "{who}? {time}? coffee",
        "{who} asked for a slot at {time}",
        "fyi {time} design review, {who} leads",
    ];
    (0..n)
        .map(|i| {
            let k = set as usize * 31 + i * 7;
            let who = NAMES[(k * 5 + 3) % NAMES.len()];
            let (h, m) = ((k * 3 + 7) % 24, [0, 15, 30, 45, 5, 20, 50][k % 7]);
            let h12 = if h % 12 == 0 { 12 } else { h % 12 };
            let (am, dotted) = if h < 12 {
                ("am", "a.m.")
            } else {
                ("pm", "p.m.")
            };
            let time = match (k / 3 + i) % 7 {
                0 => format!("{h12}:{m:02}{am}"),
                1 => format!("{h:02}:{m:02}"),
                2 => format!("{h12}:{m:02} {dotted}"),
                3 => format!("{h}.{m:02}"),
                4 => format!("{h}h{m:02}"),
                5 if m == 0 => format!("{h12}{am}"),
                5 => format!("{h}:{m:02}"),
                _ if m == 0 => format!("{h12} {am}"),
                _ => format!("{h12}:{m:02} {am}"),
            };
            FORMS[(k + i) % FORMS.len()]
                .replace("{who}", who)
                .replace("{time}", &time)
        })
        .collect()
}
