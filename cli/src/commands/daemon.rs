//! The verbs that need a running kolmd: `status`, `ps`, `load`, `unload`
//! and `run`. Each is one or a few gRPC calls; `run` streams tokens to
//! stdout as they come and, with no prompt on a terminal, holds a chat.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Context;
use kolm_compile::report::{CompileEvent, CompileOutcome};
use kolm_proto::daemon::v1 as pb;
use kolm_store::Home;
use serde_json::json;
use tokio_stream::StreamExt;

use crate::cli::{JsonArgs, LoadArgs, RefArgs, RunArgs};
use crate::daemon::{connect_required, Daemon};
use crate::output;

/// The drift log's state in one line: off, or entries since the start by
/// reason, and what was dropped or failed.
fn drift_line(drift: &pb::DriftStatus) -> String {
    if !drift.enabled {
        return "off".to_owned();
    }
    let mut by_reason: std::collections::BTreeMap<&str, u64> = Default::default();
    for c in &drift.counts {
        *by_reason.entry(c.reason.as_str()).or_default() += c.count;
    }
    let mut line = if by_reason.is_empty() {
        "no entries since the start".to_owned()
    } else {
        by_reason
            .iter()
            .map(|(r, n)| format!("{n} {r}"))
            .collect::<Vec<_>>()
            .join(", ")
            + " since the start"
    };
    if drift.dropped > 0 || drift.failed > 0 {
        line += &format!(" ({} dropped, {} failed)", drift.dropped, drift.failed);
    }
    line + &format!("; {}", drift.database)
}

pub fn status(home: &Home, args: JsonArgs) -> anyhow::Result<()> {
    let d = connect_required(home)?;
    let s = d.call(d.client.clone().status(pb::StatusRequest {}))?;
    let s = s.into_inner();
    let hw = s.hardware.unwrap_or_default();
    let listen = s.listen.unwrap_or_default();
    let drift = s.drift.unwrap_or_default();
    if args.json {
        return output::json(&json!({
            "running": true,
            "version": s.version,
            "uptime_seconds": s.uptime_seconds,
            "loaded_models": s.loaded_models,
            "hardware": {
                "cpu_model": hw.cpu_model,
                "physical_cores": hw.physical_cores,
                "total_memory_bytes": hw.total_memory_bytes,
                "available_memory_bytes": hw.available_memory_bytes,
                "gpus": hw.gpus.iter().map(|g| json!({
                    "index": g.index, "name": g.name,
                    "total_vram_bytes": g.total_vram_bytes, "free_vram_bytes": g.free_vram_bytes,
                })).collect::<Vec<_>>(),
            },
            "listen": { "http": listen.http, "grpc": listen.grpc },
            "drift": {
                "enabled": drift.enabled,
                "database": drift.database,
                "counts": drift.counts.iter().map(|c| json!({
                    "model": c.model, "reason": c.reason, "count": c.count,
                })).collect::<Vec<_>>(),
                "dropped": drift.dropped,
                "failed": drift.failed,
            },
        }));
    }
    outln!("kolmd {} is running", s.version);
    let gpus = if hw.gpus.is_empty() {
        "none".to_owned()
    } else {
        hw.gpus
            .iter()
            .map(|g| {
                format!(
                    "{} ({} free of {})",
                    g.name,
                    output::size(g.free_vram_bytes),
                    output::size(g.total_vram_bytes)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    output::fields(&[
        ("uptime", duration(s.uptime_seconds)),
        ("http", listen.http.join(", ")),
        ("grpc", listen.grpc.join(", ")),
        (
            "cpu",
            format!("{} ({} cores)", hw.cpu_model, hw.physical_cores),
        ),
        (
            "memory",
            format!(
                "{} free of {}",
                output::size(hw.available_memory_bytes),
                output::size(hw.total_memory_bytes)
            ),
        ),
        ("gpus", gpus),
        ("loaded", s.loaded_models.to_string()),
        ("drift", drift_line(&drift)),
    ]);
    Ok(())
}

pub fn ps(home: &Home, args: JsonArgs) -> anyhow::Result<()> {
    let d = connect_required(home)?;
    let models = d
        .call(d.client.clone().list_loaded(pb::ListLoadedRequest {}))?
        .into_inner()
        .models;
    if args.json {
        let list: Vec<_> = models
            .iter()
            .map(|m| {
                json!({
                    "reference": m.reference, "base_digest": m.base_digest,
                    "memory_bytes": m.memory_bytes, "device": m.device,
                    "idle_seconds": m.idle_seconds, "requests_served": m.requests_served,
                    "pinned": m.pinned, "keep_alive": m.keep_alive,
                    "expires_in_seconds": m.expires_in_seconds,
                    "slots": m.slots, "context_length": m.context_length,
                })
            })
            .collect();
        return output::json(&list);
    }
    if models.is_empty() {
        outln!("no models loaded (a request loads one, or `kolmctl load NAME`)");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = models
        .iter()
        .map(|m| {
            let until = match (m.pinned, m.expires_in_seconds) {
                (true, _) => "pinned".to_owned(),
                (false, Some(s)) => format!("in {}", duration(s)),
                (false, None) if m.keep_alive == "-1" => "forever".to_owned(),
                (false, None) => "in use".to_owned(),
            };
            vec![
                m.reference.clone(),
                output::short(&m.base_digest).to_owned(),
                output::size(m.memory_bytes),
                m.device.clone(),
                format!("{}x{}", m.slots, m.context_length),
                duration(m.idle_seconds),
                m.requests_served.to_string(),
                until,
            ]
        })
        .collect();
    output::table(
        &[
            "NAME", "BASE", "MEMORY", "DEVICE", "SLOTS", "IDLE", "SERVED", "UNLOADS",
        ],
        &rows,
    );
    Ok(())
}

pub fn load(home: &Home, args: LoadArgs) -> anyhow::Result<()> {
    if let Some(k) = &args.keep_alive {
        kolm_proto::parse_keep_alive(k).with_context(|| format!("--keep-alive `{k}`"))?;
    }
    let d = connect_required(home)?;
    let r = d
        .call(d.client.clone().load(pb::LoadRequest {
            reference: args.name.clone(),
            keep_alive: args.keep_alive.clone(),
            pin: args.pin,
        }))?
        .into_inner();
    if args.json {
        return output::json(&json!({
            "ok": true, "reference": r.reference, "memory_bytes": r.memory_bytes,
            "device": r.device, "load_ms": r.load_ms, "already_loaded": r.already_loaded,
            "pinned": args.pin,
        }));
    }
    let how = if r.already_loaded {
        "already loaded".to_owned()
    } else {
        format!("loaded in {:.1} s", r.load_ms as f64 / 1000.0)
    };
    let pin = if args.pin { ", pinned" } else { "" };
    outln!(
        "{} {how} ({} on {}{pin})",
        r.reference,
        output::size(r.memory_bytes),
        r.device
    );
    Ok(())
}

pub fn unload(home: &Home, args: RefArgs) -> anyhow::Result<()> {
    let d = connect_required(home)?;
    let r = d
        .call(d.client.clone().unload(pb::UnloadRequest {
            reference: args.name.clone(),
        }))?
        .into_inner();
    if args.json {
        return output::json(&json!({
            "ok": true, "unloaded": r.unloaded, "freed_bytes": r.freed_bytes,
        }));
    }
    if r.unloaded.is_empty() {
        outln!("{} was not loaded", args.name);
    } else {
        outln!(
            "unloaded {} (freed {})",
            r.unloaded.join(", "),
            output::size(r.freed_bytes)
        );
    }
    Ok(())
}

/// One answer: its text, and the last message's counts and timings.
struct Answer {
    text: String,
    last: pb::GenerateResponse,
    /// The sources a grounded answer was given (the first message's).
    citations: Vec<pb::Citation>,
}

pub fn run(home: &Home, args: RunArgs) -> anyhow::Result<()> {
    if let Some(k) = &args.keep_alive {
        kolm_proto::parse_keep_alive(k).with_context(|| format!("--keep-alive `{k}`"))?;
    }
    if args.max_tokens == Some(0) {
        anyhow::bail!("--max-tokens must be at least 1");
    }
    let stdin = std::io::stdin();
    let prompt = match &args.prompt {
        Some(p) => Some(p.clone()),
        None if !stdin.is_terminal() => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut stdin.lock(), &mut text)
                .context("cannot read the prompt from stdin")?;
            Some(text)
        }
        None => None,
    };
    let d = connect_required(home)?;
    match prompt {
        Some(p) => {
            if p.trim().is_empty() {
                anyhow::bail!("the prompt is empty");
            }
            let mut messages = Vec::new();
            if let Some(s) = &args.system {
                messages.push(message("system", s));
            }
            messages.push(message("user", &p));
            let answer = generate(&d, &args, messages, &p, !args.json)?;
            if args.json {
                let usage = answer.last.usage.unwrap_or_default();
                let timings = answer.last.timings.unwrap_or_default();
                return output::json(&json!({
                    "ok": true,
                    "model": args.name,
                    "text": answer.text,
                    "finish_reason": finish(answer.last.finish_reason()),
                    "usage": {
                        "prompt_tokens": usage.prompt_tokens,
                        "completion_tokens": usage.completion_tokens,
                    },
                    "timings": {
                        "ttft_ms": timings.ttft_ms,
                        "tokens_per_second": timings.tokens_per_second,
                        "total_ms": timings.total_ms,
                    },
                    "draft": answer.last.draft.map(|d| json!({
                        "drafted": d.drafted,
                        "accepted": d.accepted,
                        "steps": d.steps,
                    })),
                    "verified": answer.last.verified.as_ref().map(|v| json!({
                        "passed": v.passed,
                        "rules": v.rules,
                        "attempts": v.attempts,
                    })),
                    "citations": answer.citations.iter().map(|c| json!({
                        "source": c.source,
                        "offset": c.offset,
                        "end": c.end,
                        "score": c.score,
                        "page": c.page,
                        "record": c.record,
                    })).collect::<Vec<_>>(),
                }));
            }
            Ok(())
        }
        None if args.json => anyhow::bail!("--json needs a prompt"),
        None => chat(&d, &args),
    }
}

/// The interactive loop: each answer joins the conversation.
fn chat(d: &Daemon, args: &RunArgs) -> anyhow::Result<()> {
    eprintln!(
        "chatting with {} (/bye or Ctrl-D to end, /clear to start over)",
        args.name
    );
    let mut history: Vec<pb::ChatMessage> = Vec::new();
    if let Some(s) = &args.system {
        history.push(message("system", s));
    }
    let system_len = history.len();
    let stdin = std::io::stdin();
    let mut line = String::new();
    loop {
        eprint!(">>> ");
        std::io::stderr().flush().ok();
        line.clear();
        if stdin.lock().read_line(&mut line)? == 0 {
            eprintln!();
            return Ok(());
        }
        let input = line.trim();
        match input {
            "" => continue,
            "/bye" | "/exit" | "/quit" => return Ok(()),
            "/clear" => {
                history.truncate(system_len);
                eprintln!("(conversation cleared)");
                continue;
            }
            _ => {}
        }
        history.push(message("user", input));
        match generate(d, args, history.clone(), input, true) {
            Ok(answer) => history.push(message("assistant", &answer.text)),
            Err(e) => {
                history.pop();
                eprintln!("error: {}", crate::exit::message(&e));
            }
        }
    }
}

fn message(role: &str, content: &str) -> pb::ChatMessage {
    pb::ChatMessage {
        role: role.into(),
        content: content.into(),
    }
}

/// One Generate call; prints the text as it streams when `print`.
fn generate(
    d: &Daemon,
    args: &RunArgs,
    messages: Vec<pb::ChatMessage>,
    raw: &str,
    print: bool,
) -> anyhow::Result<Answer> {
    let prompt = if args.raw {
        pb::generate_request::Prompt::Text(raw.to_owned())
    } else {
        pb::generate_request::Prompt::Messages(pb::ChatMessages { messages })
    };
    let request = pb::GenerateRequest {
        model: args.name.clone(),
        prompt: Some(prompt),
        temperature: args.temperature,
        seed: args.seed,
        max_tokens: args.max_tokens,
        stop: args.stop.clone(),
        keep_alive: args.keep_alive.clone(),
        recall_k: args.recall_k,
        draft: args.no_draft.then_some(false),
        verify_retries: args.verify_retries,
        ..Default::default()
    };
    let mut client = d.client.clone();
    let answer = d.call(async move {
        let mut stream = client.generate(request).await?.into_inner();
        let mut text = String::new();
        let mut citations = Vec::new();
        while let Some(msg) = stream.next().await {
            let msg = msg?;
            citations.extend(msg.citations.iter().cloned());
            if print && !msg.text.is_empty() {
                out!("{}", msg.text);
                let _ = std::io::stdout().flush();
            }
            text.push_str(&msg.text);
            if msg.finish_reason() != pb::FinishReason::Unspecified {
                return Ok(Answer {
                    text,
                    last: msg,
                    citations,
                });
            }
        }
        Err(tonic::Status::unavailable(
            "kolmd ended the stream before the answer was complete",
        ))
    })?;
    if print {
        outln!();
        if args.verbose {
            let usage = answer.last.usage.unwrap_or_default();
            let t = answer.last.timings.unwrap_or_default();
            eprintln!(
                "{} prompt tokens, {} generated ({}), first token after {:.0} ms, {:.1} tokens/s",
                usage.prompt_tokens,
                usage.completion_tokens,
                finish(answer.last.finish_reason()),
                t.ttft_ms,
                t.tokens_per_second
            );
            if let Some(line) = answer.last.draft.as_ref().map(draft_line) {
                eprintln!("{line}");
            }
            if let Some(v) = &answer.last.verified {
                eprintln!("{}", verified_line(v));
            }
            for (i, c) in answer.citations.iter().enumerate() {
                eprintln!("[{}] {} (score {:.3})", i + 1, citation_label(c), c.score);
            }
        }
    }
    Ok(answer)
}

/// What drafting did, as `--verbose` prints it.
fn draft_line(d: &pb::DraftStats) -> String {
    let share = if d.drafted > 0 {
        format!(
            " ({:.0}%)",
            100.0 * f64::from(d.accepted) / f64::from(d.drafted)
        )
    } else {
        String::new()
    };
    let per_step = if d.steps > 0 {
        f64::from(d.steps + d.accepted) / f64::from(d.steps)
    } else {
        0.0
    };
    format!(
        "drafting: {} of {} drafted tokens accepted{share}, {per_step:.2} tokens per step over {} steps",
        d.accepted, d.drafted, d.steps
    )
}

/// The verifier's word, as `--verbose` prints it.
fn verified_line(v: &pb::Verified) -> String {
    let tries = match v.attempts {
        1 => String::new(),
        n => format!(" after {n} answers"),
    };
    if v.passed {
        format!("verifier: passed{tries}")
    } else {
        format!("verifier: failed {}{tries}", v.rules.join(", "))
    }
}

/// A citation labelled as the grounding template labels its source.
fn citation_label(c: &pb::Citation) -> String {
    kolm_recall::prompt::source_label(&c.source, c.page, c.record, c.offset, c.end)
}

fn finish(reason: pb::FinishReason) -> &'static str {
    match reason {
        pb::FinishReason::Stop => "stop",
        pb::FinishReason::Length => "length",
        pb::FinishReason::Unspecified => "unfinished",
    }
}

/// `1h02m`, `5m30s`, `42s`.
fn duration(seconds: u64) -> String {
    match seconds {
        s if s >= 3600 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

/// `kolmctl compile --via-daemon`: the same compile, run by kolmd as a child
/// process; progress streams back, and kolmd installs a passing artifact.
/// The arguments are forwarded as typed (without `--via-daemon`), with the
/// teacher's key and endpoint variables from this shell.
pub fn compile_via_daemon(home: &Home, args: &crate::cli::CompileArgs) -> anyhow::Result<()> {
    let d = connect_required(home)?;
    let mut forwarded: Vec<String> = std::env::args()
        .skip_while(|a| a != "compile")
        .skip(1)
        .filter(|a| a != "--via-daemon" && a != "--json")
        .collect();
    // The embedder may come from this shell's KOLM_EMBEDDER, which the
    // daemon's child does not see: pass it on as a flag.
    if let (Some(embedder), Ok(_)) = (&args.embedder, std::env::var("KOLM_EMBEDDER")) {
        if !forwarded
            .iter()
            .any(|a| a == "--embedder" || a.starts_with("--embedder="))
        {
            forwarded.push("--embedder".into());
            forwarded.push(embedder.to_string_lossy().into_owned());
        }
    }
    let env = std::env::vars()
        .filter(|(k, _)| {
            k.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                && (k.ends_with("_KEY") || k.ends_with("_BASE_URL"))
        })
        .collect();
    let cwd = std::env::current_dir().context("cannot read the working directory")?;
    let request = pb::CompileRequest {
        args: forwarded,
        cwd: cwd.to_string_lossy().into_owned(),
        env,
        install: true,
    };
    let mut stream = d.call(d.client.clone().compile(request))?.into_inner();
    let mut result = None;
    while let Some(message) = d.runtime.block_on(stream.next()) {
        let message = message.map_err(crate::daemon::DaemonError::from)?;
        match message.event {
            Some(pb::compile_event::Event::ProgressJson(line)) => {
                if args.json {
                    continue;
                }
                match serde_json::from_str::<CompileEvent>(&line) {
                    Ok(CompileEvent::StageStarted { stage, .. }) => {
                        eprintln!("{} ...", stage.name())
                    }
                    Ok(CompileEvent::StageFinished { stage, seconds }) => {
                        eprintln!("{} done in {seconds:.1}s", stage.name())
                    }
                    Ok(CompileEvent::Note { message }) => eprintln!("{message}"),
                    Ok(CompileEvent::Advance { .. }) => {}
                    Err(e) => {
                        eprintln!("kolmd sent a progress line kolmctl cannot read ({e}): {line}")
                    }
                }
            }
            Some(pb::compile_event::Event::Result(r)) => result = Some(r),
            None => {}
        }
    }
    let result = result.context("kolmd ended the compile without a result")?;
    let outcome: Option<CompileOutcome> = serde_json::from_str(&result.report_json).ok();
    let report = match &outcome {
        Some(CompileOutcome::Report(r)) => Some(r.as_ref()),
        _ => None,
    };
    if args.json {
        // kolmd's result as the local compile would print it, plus what kolmd did.
        let mut full: serde_json::Value =
            serde_json::from_str(&result.report_json).unwrap_or_else(|_| json!({}));
        if let Some(obj) = full.as_object_mut() {
            obj.insert("installed".into(), json!(result.installed));
            obj.insert("exit_code".into(), json!(result.exit_code));
        }
        output::json(&full)?;
    } else if let Some(report) = report {
        outln!("K-score {:.3}", report.k_score);
        // The same accuracy lines as a local compile, from the report.
        super::scores::print_scores(&report.accuracy.scores());
        if let Some(d) = &report.drafting {
            outln!("drafting             {}", d.describe());
        }
        if let Some(i) = &result.installed {
            outln!("kolmd installed {i}");
        }
    }
    match (result.exit_code, result.error) {
        (0, _) if report.is_none() => anyhow::bail!(
            "the compile in kolmd succeeded but its report cannot be read: {}",
            result.report_json
        ),
        (0, _) => Ok(()),
        (7, error) => match report {
            Some(r) if r.passed_gate => match &r.regression {
                Some(g) => Err(crate::exit::Regressed {
                    from: g.from.clone(),
                    old: g.old.value(),
                    new: g.new.value(),
                }
                .into()),
                None => anyhow::bail!(
                    "the compile in kolmd exited 7 but its report shows neither a gate nor a regression it failed: {}",
                    error.unwrap_or_else(|| "no message".into())
                ),
            },
            Some(r) => Err(crate::exit::BelowGate {
                k: r.k_score,
                gate: r.gate,
            }
            .into()),
            None => anyhow::bail!(
                "the compile in kolmd ended below its gate but sent no report: {}",
                error.unwrap_or_else(|| "no message".into())
            ),
        },
        (code, error) => anyhow::bail!(
            "the compile in kolmd failed (exit {code}): {}",
            error.unwrap_or_else(|| "no message".into())
        ),
    }
}
