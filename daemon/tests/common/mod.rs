//! Shared by kolmd's end-to-end tests: a kolm home with real SmolLM2
//! artifacts packed and installed (once per test binary), a real `kolmd`
//! process on 127.0.0.1:0, and a small blocking HTTP/1.1 client that can
//! also read server-sent events and hang up mid-stream.

#![allow(dead_code)]

pub mod scripted_teacher;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use kolm_artifact::{NoProgress, PackSpec};
use serde_json::Value;

pub fn smollm2() -> PathBuf {
    kolm_fixtures::smollm2()
}

/// The embedder fixture (all-MiniLM-L6-v2, sentence-transformers zip).
pub fn minilm_zip() -> PathBuf {
    kolm_fixtures::minilm_zip()
}

/// `kolmctl`, built beside the kolmd under test.
pub fn kolmctl_path() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_kolmd")).with_file_name("kolmctl");
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build -p kolm-cli`",
        path.display()
    );
    path
}

/// Artifacts installed in the shared home, all on the SmolLM2 base.
pub const MODELS: &[&str] = &["smollm2", "alpha", "beta", "gamma"];

/// A kolm home with [`MODELS`] installed, created once per test binary.
pub fn home() -> &'static Path {
    static HOME: OnceLock<PathBuf> = OnceLock::new();
    HOME.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let home = kolm_store::Home::at(dir.join("home"));
        let keyring = home.keyring();
        let (key, _) = keyring.signing_key_or_create_default(None).unwrap();
        let receipt_key = keyring.receipt_key().unwrap();
        let store = home.store().unwrap();
        let policy = keyring.trust_policy(false).unwrap();
        for name in MODELS {
            let out = dir.join(format!("{name}.kolm"));
            let spec = PackSpec::new(name, "0.1.0", smollm2());
            kolm_artifact::pack(spec, &[&key], &receipt_key, &out, &NoProgress).unwrap();
            store.install(&out, &policy, &NoProgress).unwrap();
            std::fs::remove_file(&out).unwrap();
        }
        home.root().to_path_buf()
    })
}

/// A running kolmd; killed when dropped.
pub struct Daemon {
    pub child: Child,
    pub addr: SocketAddr,
    /// The gRPC control API's Unix socket.
    pub socket: PathBuf,
    pub log: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts kolmd with small test settings plus `extra` TOML lines.
    pub fn start(extra: &str) -> Daemon {
        Self::start_with(extra, &[])
    }

    pub fn start_with(extra: &str, env: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("kolmd.toml");
        // Each daemon gets its own socket: tests share a home.
        let socket = dir.path().join("kolmd.sock");
        let base = format!(
            "home = {:?}\ngrpc_socket = {:?}\nslots = 2\ncontext = 512\nbatch = 256\nthreads = 2\nqueue = 8\nkeep_alive = \"-1\"\nshutdown_grace = \"20s\"\n",
            home(),
            socket
        );
        // Later keys in `extra` replace the defaults above.
        let mut table: toml_lines::Table = toml_lines::parse(&base);
        table.merge(toml_lines::parse(extra));
        std::fs::write(&config, table.render()).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kolmd"));
        cmd.args([
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .env_remove("KOLM_API_KEY")
        .env_remove("KOLM_API_KEYS")
        .env_remove("KOLM_LISTEN")
        .env_remove("KOLM_GRPC_SOCKET")
        .env_remove("KOLM_GRPC_LISTEN")
        .env("KOLM_LOG", "info,kolmd=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(at) = line.find("listening on http://") {
                        let addr = line[at + "listening on http://".len()..]
                            .split_whitespace()
                            .next()
                            .unwrap()
                            .to_owned();
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(addr);
                        }
                    }
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            });
        }
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a.parse().unwrap(),
            Err(_) => {
                let _ = child.kill();
                panic!("kolmd did not start:\n{}", log.lock().unwrap());
            }
        };
        Daemon {
            child,
            addr,
            socket,
            log,
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn get(&self, path: &str) -> Response {
        request(self.addr, "GET", path, None, &[])
    }

    pub fn post(&self, path: &str, body: &Value) -> Response {
        request(
            self.addr,
            "POST",
            path,
            Some(body.to_string().as_bytes()),
            &[],
        )
    }

    pub fn post_raw(&self, path: &str, body: &[u8]) -> Response {
        request(self.addr, "POST", path, Some(body), &[])
    }

    /// `/kolm/v1/loaded`.
    pub fn loaded(&self) -> Value {
        let r = self.get("/kolm/v1/loaded");
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    pub fn loaded_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.loaded()["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                m["model"]
                    .as_str()
                    .unwrap()
                    .split(':')
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        names.sort();
        names
    }

    /// Runs `kolmctl` against this daemon (over its gRPC socket), with
    /// `stdin` as its input.
    pub fn kolmctl(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        let mut cmd = Command::new(kolmctl_path());
        cmd.args(args)
            .env("KOLM_HOME", home())
            .env("KOLM_GRPC_SOCKET", &self.socket)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let mut child = cmd.spawn().unwrap();
        if let Some(text) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// `kolmctl ARGS` that must succeed; its stdout as JSON.
    pub fn kolmctl_json(&self, args: &[&str]) -> Value {
        let out = self.kolmctl(args, None);
        assert!(
            out.status.success(),
            "kolmctl {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// The same one-question chat through both doors: `/v1/chat/completions`
    /// with `body` (its `model` and `messages` are set here) and `kolmctl
    /// run MODEL QUESTION RUN_ARGS --json` over gRPC. Returns both answers,
    /// each with its `text` and `citations` (empty when not grounded).
    pub fn chat_both_ways(
        &self,
        model: &str,
        question: &str,
        mut body: Value,
        run_args: &[&str],
    ) -> [Answer; 2] {
        body["model"] = model.into();
        body["messages"] = serde_json::json!([{"role": "user", "content": question}]);
        let r = self.post("/v1/chat/completions", &body);
        assert_eq!(r.status, 200, "{}\n{}", r.text(), self.log());
        let http = r.json();
        let mut args = vec!["run", model, question, "--json"];
        args.extend_from_slice(run_args);
        let grpc = self.kolmctl_json(&args);
        let sources = |list: &Value| -> Vec<String> {
            list.as_array()
                .into_iter()
                .flatten()
                .map(|c| c["source"].as_str().unwrap().to_owned())
                .collect()
        };
        [
            Answer {
                text: http["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                sources: sources(&http["kolm"]["citations"]),
            },
            Answer {
                text: grpc["text"].as_str().unwrap().to_owned(),
                sources: sources(&grpc["citations"]),
            },
        ]
    }

    /// A short greedy chat; asserts success and returns the text.
    pub fn chat(&self, model: &str, extra: Value) -> String {
        let mut body = serde_json::json!({
            "model": model,
            "messages": [{"role": "user", "content": "Say hello."}],
            "max_tokens": 8,
            "temperature": 0,
        });
        for (k, v) in extra.as_object().into_iter().flatten() {
            body[k] = v.clone();
        }
        let r = self.post("/v1/chat/completions", &body);
        assert_eq!(r.status, 200, "{}\n{}", r.text(), self.log());
        r.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One answer of [`Daemon::chat_both_ways`].
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    pub text: String,
    /// The sources of its citations, in order.
    pub sources: Vec<String>,
}

/// An HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Asserts an OpenAI-shaped error with this status; returns `error`.
    pub fn error(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "{}", self.text());
        let v = self.json();
        let e = &v["error"];
        assert!(e["message"].is_string(), "{v}");
        assert!(e["type"].is_string(), "{v}");
        assert!(e.get("param").is_some() && e.get("code").is_some(), "{v}");
        e.clone()
    }

    /// `data:` payloads of a server-sent event body.
    pub fn events(&self) -> Vec<String> {
        self.text()
            .lines()
            .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
            .map(str::to_owned)
            .collect()
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    s
}

pub fn send_head(
    stream: &mut TcpStream,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    if let Some(b) = body {
        // The server may answer (413) before reading everything.
        let _ = stream.write_all(b);
    }
}

/// One request on a fresh connection.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> Response {
    let mut stream = connect(addr);
    send_head(&mut stream, method, path, body, headers);
    read_response(&mut stream)
}

pub fn read_response(stream: &mut TcpStream) -> Response {
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse_response(&raw)
}

pub fn parse_response(raw: &[u8]) -> Response {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let Ok(size) = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
        else {
            break;
        };
        data = &data[eol + 2..];
        if size == 0 || data.len() < size {
            out.extend_from_slice(&data[..size.min(data.len())]);
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
    out
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

/// Enough of TOML for flat `key = value` lines, so tests can override the
/// defaults above (later lines win).
mod toml_lines {
    #[derive(Default)]
    pub struct Table(Vec<(String, String)>);

    pub fn parse(text: &str) -> Table {
        Table(
            text.lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .collect(),
        )
    }

    impl Table {
        pub fn merge(&mut self, other: Table) {
            for (k, v) in other.0 {
                match self.0.iter_mut().find(|(key, _)| *key == k) {
                    Some(slot) => slot.1 = v,
                    None => self.0.push((k, v)),
                }
            }
        }

        pub fn render(&self) -> String {
            self.0.iter().map(|(k, v)| format!("{k} = {v}\n")).collect()
        }
    }
}
