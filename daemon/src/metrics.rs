//! Prometheus metrics, kept in plain maps and rendered in the text
//! exposition format: requests by route and status, prompt and completion
//! tokens, drafted and accepted tokens per source, time-to-first-token and
//! per-output-token latency histograms; drift entries logged, dropped and
//! failed (from the drift log);
//! loaded models, their memory and queue depths come from the scheduler at
//! scrape time.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use kolm_runtime::{Completion, DraftSource};

use crate::drift::DriftLog;
use crate::scheduler::Scheduler;

const TTFT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const TPOT_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

#[derive(Clone, Debug)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        for (b, c) in self.bounds.iter().zip(self.counts.iter_mut()) {
            if v <= *b {
                *c += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

#[derive(Debug, Default)]
struct Data {
    requests: BTreeMap<(String, u16), u64>,
    prompt_tokens: BTreeMap<String, u64>,
    completion_tokens: BTreeMap<String, u64>,
    ttft: BTreeMap<String, Histogram>,
    tpot: BTreeMap<String, Histogram>,
    /// (model, source, accepted?) → tokens.
    draft_tokens: BTreeMap<(String, &'static str, bool), u64>,
    /// model → decoding steps of requests that drafted.
    draft_steps: BTreeMap<String, u64>,
    /// (model, passed?) → answers returned after the verifier's check.
    verified: BTreeMap<(String, bool), u64>,
    /// model → answers generated for checked requests, retries included.
    verify_attempts: BTreeMap<String, u64>,
}

/// The daemon's counters and histograms.
#[derive(Debug, Default)]
pub struct Metrics {
    data: Mutex<Data>,
}

impl Metrics {
    /// Counts one HTTP response.
    pub fn request(&self, route: &str, status: u16) {
        let mut d = self.data.lock().unwrap_or_else(|e| e.into_inner());
        *d.requests.entry((route.to_owned(), status)).or_default() += 1;
    }

    /// Records a finished generation: its tokens, latencies and what
    /// drafting did.
    pub fn generation(&self, model: &str, c: &Completion) {
        let mut d = self.data.lock().unwrap_or_else(|e| e.into_inner());
        *d.prompt_tokens.entry(model.to_owned()).or_default() += u64::from(c.prompt_tokens);
        *d.completion_tokens.entry(model.to_owned()).or_default() += u64::from(c.completion_tokens);
        d.ttft
            .entry(model.to_owned())
            .or_insert_with(|| Histogram::new(TTFT_BUCKETS))
            .observe(c.time_to_first_token.as_secs_f64());
        if c.completion_tokens > 1 {
            let decode: Duration = c.total_time.saturating_sub(c.time_to_first_token);
            let per = decode.as_secs_f64() / f64::from(c.completion_tokens - 1);
            d.tpot
                .entry(model.to_owned())
                .or_insert_with(|| Histogram::new(TPOT_BUCKETS))
                .observe(per);
        }
        if let Some(stats) = &c.draft {
            *d.draft_steps.entry(model.to_owned()).or_default() += u64::from(stats.steps);
            for source in DraftSource::ALL {
                let n = stats.source(source);
                for (accepted, tokens) in [(true, n.accepted), (false, n.drafted - n.accepted)] {
                    *d.draft_tokens
                        .entry((model.to_owned(), source.name(), accepted))
                        .or_default() += u64::from(tokens);
                }
            }
        }
    }

    /// Records the verifier's word on a returned answer (nothing for an
    /// answer that was not checked).
    pub fn verified(&self, model: &str, verified: Option<&crate::verify::Verified>) {
        let Some(v) = verified else { return };
        let mut d = self.data.lock().unwrap_or_else(|e| e.into_inner());
        *d.verified.entry((model.to_owned(), v.passed)).or_default() += 1;
        *d.verify_attempts.entry(model.to_owned()).or_default() += u64::from(v.attempts);
    }

    /// Records prompt tokens of an embedding request.
    pub fn embedding(&self, model: &str, prompt_tokens: u32) {
        let mut d = self.data.lock().unwrap_or_else(|e| e.into_inner());
        *d.prompt_tokens.entry(model.to_owned()).or_default() += u64::from(prompt_tokens);
    }

    /// The text exposition of everything, plus the scheduler's state.
    pub fn render(&self, scheduler: &Scheduler, drift: &DriftLog) -> String {
        let mut out = String::new();
        {
            let d = self.data.lock().unwrap_or_else(|e| e.into_inner());
            header(
                &mut out,
                "kolm_http_requests_total",
                "counter",
                "HTTP responses by route and status.",
            );
            for ((route, status), n) in &d.requests {
                let _ = writeln!(
                    out,
                    "kolm_http_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                    esc(route)
                );
            }
            header(
                &mut out,
                "kolm_prompt_tokens_total",
                "counter",
                "Prompt tokens processed.",
            );
            for (m, n) in &d.prompt_tokens {
                let _ = writeln!(out, "kolm_prompt_tokens_total{{model=\"{}\"}} {n}", esc(m));
            }
            header(
                &mut out,
                "kolm_completion_tokens_total",
                "counter",
                "Tokens generated.",
            );
            for (m, n) in &d.completion_tokens {
                let _ = writeln!(
                    out,
                    "kolm_completion_tokens_total{{model=\"{}\"}} {n}",
                    esc(m)
                );
            }
            header(
                &mut out,
                "kolm_time_to_first_token_seconds",
                "histogram",
                "From the request reaching the engine to its first token.",
            );
            for (m, h) in &d.ttft {
                h.render(
                    &mut out,
                    "kolm_time_to_first_token_seconds",
                    &format!("model=\"{}\"", esc(m)),
                );
            }
            header(
                &mut out,
                "kolm_time_per_output_token_seconds",
                "histogram",
                "Mean time per generated token after the first, per request.",
            );
            for (m, h) in &d.tpot {
                h.render(
                    &mut out,
                    "kolm_time_per_output_token_seconds",
                    &format!("model=\"{}\"", esc(m)),
                );
            }
            header(
                &mut out,
                "kolm_draft_tokens_total",
                "counter",
                "Drafted tokens by source (grammar, recipes, prompt) and outcome (accepted: \
                 the model agreed; rejected: it did not).",
            );
            for ((m, source, accepted), n) in &d.draft_tokens {
                let outcome = if *accepted { "accepted" } else { "rejected" };
                let _ = writeln!(
                    out,
                    "kolm_draft_tokens_total{{model=\"{}\",source=\"{source}\",outcome=\"{outcome}\"}} {n}",
                    esc(m)
                );
            }
            header(
                &mut out,
                "kolm_draft_steps_total",
                "counter",
                "Decoding steps of requests that drafted (each emits one token of the model's \
                 own plus the drafts it accepted).",
            );
            for (m, n) in &d.draft_steps {
                let _ = writeln!(out, "kolm_draft_steps_total{{model=\"{}\"}} {n}", esc(m));
            }
            header(
                &mut out,
                "kolm_verified_total",
                "counter",
                "Answers checked by their artifact's verifier, by outcome (passed, failed) of \
                 the answer returned.",
            );
            for ((m, passed), n) in &d.verified {
                let outcome = if *passed { "passed" } else { "failed" };
                let _ = writeln!(
                    out,
                    "kolm_verified_total{{model=\"{}\",outcome=\"{outcome}\"}} {n}",
                    esc(m)
                );
            }
            header(
                &mut out,
                "kolm_verify_attempts_total",
                "counter",
                "Answers generated for checked requests, retries included.",
            );
            for (m, n) in &d.verify_attempts {
                let _ = writeln!(
                    out,
                    "kolm_verify_attempts_total{{model=\"{}\"}} {n}",
                    esc(m)
                );
            }
        }
        header(
            &mut out,
            "kolm_drift_entries_total",
            "counter",
            "Answers logged as drift since the start, by reason (an answer with two reasons \
             counts under each).",
        );
        for ((m, reason), n) in drift.logged() {
            let _ = writeln!(
                out,
                "kolm_drift_entries_total{{model=\"{}\",reason=\"{reason}\"}} {n}",
                esc(&m)
            );
        }
        header(
            &mut out,
            "kolm_drift_dropped_total",
            "counter",
            "Drift entries dropped because the writer could not keep up (the request was not \
             slowed).",
        );
        let _ = writeln!(out, "kolm_drift_dropped_total {}", drift.dropped());
        header(
            &mut out,
            "kolm_drift_failed_total",
            "counter",
            "Drift entries the writer could not write to the database.",
        );
        let _ = writeln!(out, "kolm_drift_failed_total {}", drift.failed());
        let loaded = scheduler.list_loaded();
        let memory = scheduler.memory();
        header(&mut out, "kolm_loaded_models", "gauge", "Artifacts loaded.");
        let _ = writeln!(out, "kolm_loaded_models {}", loaded.len());
        header(
            &mut out,
            "kolm_loading_models",
            "gauge",
            "Loads in progress.",
        );
        let _ = writeln!(out, "kolm_loading_models {}", scheduler.loading());
        header(
            &mut out,
            "kolm_loaded_bases",
            "gauge",
            "Base models loaded (shared by artifacts).",
        );
        let _ = writeln!(out, "kolm_loaded_bases {}", memory.bases.len());
        header(
            &mut out,
            "kolm_base_memory_bytes",
            "gauge",
            "Weights of each loaded base, counted once.",
        );
        for (digest, bytes, refs) in &memory.bases {
            let _ = writeln!(
                out,
                "kolm_base_memory_bytes{{base=\"{digest}\",artifacts=\"{refs}\"}} {bytes}"
            );
        }
        header(
            &mut out,
            "kolm_model_memory_bytes",
            "gauge",
            "Memory each loaded artifact holds beyond its base: KV cache and recall embedder.",
        );
        for m in &loaded {
            let _ = writeln!(
                out,
                "kolm_model_memory_bytes{{model=\"{}\",base=\"{}\"}} {}",
                esc(&m.model),
                m.base,
                m.own_bytes()
            );
        }
        header(
            &mut out,
            "kolm_memory_used_bytes",
            "gauge",
            "Weights plus KV caches of everything loaded.",
        );
        let _ = writeln!(out, "kolm_memory_used_bytes {}", memory.total_bytes);
        header(
            &mut out,
            "kolm_queue_depth",
            "gauge",
            "Requests waiting for a slot.",
        );
        for m in &loaded {
            let _ = writeln!(
                out,
                "kolm_queue_depth{{model=\"{}\"}} {}",
                esc(&m.model),
                m.queued
            );
        }
        header(
            &mut out,
            "kolm_requests_in_flight",
            "gauge",
            "Requests holding a loaded artifact.",
        );
        for m in &loaded {
            let _ = writeln!(
                out,
                "kolm_requests_in_flight{{model=\"{}\"}} {}",
                esc(&m.model),
                m.in_use
            );
        }
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
