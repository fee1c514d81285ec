//! A release `kolmd` started for a benchmark: a config file written from
//! the given TOML lines, `127.0.0.1:0`, and the address it prints; killed
//! when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

/// A running kolmd.
#[derive(Debug)]
pub struct Kolmd {
    child: Child,
    pub addr: SocketAddr,
}

impl Kolmd {
    /// Starts `kolmd` on `home` with `config` (TOML lines, `home` added),
    /// writing its config file into `dir`.
    pub fn start(kolmd: &Path, home: &Path, dir: &Path, config: &str) -> Result<Kolmd> {
        let file = dir.join(format!("kolmd-{}.toml", std::process::id()));
        std::fs::write(
            &file,
            format!("home = {:?}\n{config}\n", home.display().to_string()),
        )?;
        let mut child = Command::new(kolmd)
            .arg("--config")
            .arg(&file)
            .args(["--listen", "127.0.0.1:0"])
            .env("KOLM_LOG", "info")
            .env_remove("KOLM_API_KEY")
            .env_remove("KOLM_API_KEYS")
            .env_remove("KOLM_GRPC_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", kolmd.display()))?;
        let stderr = child.stderr.take().context("kolmd's stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("listening on http://") {
                    let addr = line[at + "listening on http://".len()..]
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .trim_end_matches('/')
                        .to_owned();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .context("kolmd did not start")?
            .parse()
            .context("kolmd printed an address that does not parse")?;
        Ok(Kolmd { child, addr })
    }

    /// `http://ADDR/v1`, an OpenAI `base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

impl Drop for Kolmd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
