//! A replayed teacher for benchmarks that compile: a loopback
//! OpenAI-compatible chat endpoint that answers each request with the
//! recorded reference answer of the task input found in its last user
//! message (the longest one, so an input that contains another wins).
//!
//! A frontier teacher cannot be reached from the benchmark machine, and the
//! SmolLM2 fixture labels almost nothing right; replaying the task's own
//! reference answers gives the compiler the verified outputs a capable
//! teacher would. It is a stand-in for a remote service, never quoted as
//! teacher quality.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use serde_json::{json, Value};

/// The running replay server; it lives until the process ends.
#[derive(Debug)]
pub struct ReplayTeacher {
    pub addr: SocketAddr,
}

impl ReplayTeacher {
    /// Serves the `input` → `output` pairs of these JSONL files.
    pub fn start(files: &[&Path]) -> Result<ReplayTeacher> {
        let mut answers = BTreeMap::new();
        for file in files {
            for (pair_input, pair_output) in read_pairs(file)? {
                answers.insert(pair_input, pair_output);
            }
        }
        let answers = Arc::new(answers);
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let answers = Arc::clone(&answers);
                std::thread::spawn(move || serve(stream, &answers));
            }
        });
        Ok(ReplayTeacher { addr })
    }

    /// `teacher_config.base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

/// The `input` and `output` strings of a task's JSONL file.
pub fn read_pairs(file: &Path) -> Result<Vec<(String, String)>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .with_context(|| format!("{}: a line is not JSON", file.display()))?;
            let field = |k: &str| {
                v[k].as_str()
                    .map(str::to_owned)
                    .with_context(|| format!("{}: a line has no string `{k}`", file.display()))
            };
            Ok((field("input")?, field("output")?))
        })
        .collect()
}

fn serve(stream: TcpStream, answers: &BTreeMap<String, String>) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
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
        let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let text = answer(&request, answers);
        let response = json!({
            "id": "replay", "object": "chat.completion", "created": 0,
            "model": request["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 60, "completion_tokens": 20, "total_tokens": 80},
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

fn answer(request: &Value, answers: &BTreeMap<String, String>) -> String {
    let last_user = request["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .rev()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default();
    answers
        .iter()
        .filter(|(input, _)| last_user.contains(input.as_str()))
        .max_by_key(|(input, _)| input.len())
        .map_or_else(|| "I cannot answer that.".to_owned(), |(_, o)| o.clone())
}
