//! The verbs on the local store: `install`, `list`, `show`, `rm`, `gc`.

use kolm_artifact::SignerStatus;
use kolm_store::{Home, InstallOutcome};
use serde_json::json;

use crate::cli::{InstallArgs, RefArgs};
use crate::output;
use crate::progress::Bar;

pub fn install(home: &Home, args: InstallArgs, bar: &Bar) -> anyhow::Result<()> {
    let policy = super::trust_policy(&home.keyring(), &args.trust)?;
    let store = home.store()?;
    let report = store.install(&args.artifact, &policy, bar)?;
    let r = &report.record;
    if args.json {
        return output::json(&json!({
            "ok": true,
            "name": r.name,
            "version": r.version,
            "outcome": report.outcome,
            "written_bytes": report.written_bytes,
            "reused_bytes": report.reused_bytes,
            "record": r,
        }));
    }
    let what = match &report.outcome {
        InstallOutcome::Installed => "installed",
        InstallOutcome::AlreadyInstalled => "already installed",
        InstallOutcome::Replaced { .. } => "replaced",
    };
    println!(
        "{what} {}:{} ({} written, {} shared with installed artifacts)",
        r.name,
        r.version,
        output::size(report.written_bytes),
        output::size(report.reused_bytes)
    );
    if r.signers.is_empty() {
        println!("  warning: installed with --allow-untrusted; its signer is not trusted");
    }
    Ok(())
}

pub fn list(home: &Home, json: bool) -> anyhow::Result<()> {
    let records = home.store()?.list()?;
    if json {
        return output::json(&records);
    }
    if records.is_empty() {
        println!("no artifacts installed (add one with `kolmctl install X.kolm`)");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            let b = &r.statement.predicate.base;
            vec![
                format!("{}:{}", r.name, r.version),
                output::size(r.size),
                format!("{} {}", b.architecture, b.quantization),
                r.statement
                    .predicate
                    .k_score
                    .as_ref()
                    .map_or_else(|| "-".into(), |k| format!("{:.3}", k.value)),
                r.installed.clone(),
            ]
        })
        .collect();
    output::table(&["NAME", "SIZE", "BASE", "K", "INSTALLED"], &rows);
    Ok(())
}

pub fn show(home: &Home, args: RefArgs, bar: &Bar) -> anyhow::Result<()> {
    let store = home.store()?;
    let record = store.get(&args.name)?;
    store.check(&record, bar)?;
    if args.json {
        return output::json(&json!({ "record": record, "blobs_verified": true }));
    }
    let signers = if record.signers.is_empty() {
        SignerStatus::Unchecked(Vec::new())
    } else {
        SignerStatus::Trusted(record.signers.clone())
    };
    super::artifact::print_manifest(&record.statement, &signers, &home.keyring());
    println!();
    println!(
        "installed {}; all {} blobs re-checked against their digests",
        record.installed,
        record.statement.predicate.entries.len()
    );
    Ok(())
}

pub fn remove(home: &Home, args: RefArgs) -> anyhow::Result<()> {
    let record = home.store()?.remove(&args.name)?;
    if args.json {
        return output::json(
            &json!({ "ok": true, "removed": format!("{}:{}", record.name, record.version) }),
        );
    }
    println!(
        "removed {}:{} (run `kolmctl gc` to free its unshared blobs)",
        record.name, record.version
    );
    Ok(())
}

pub fn gc(home: &Home, json: bool) -> anyhow::Result<()> {
    let report = home.store()?.gc()?;
    if json {
        return output::json(&report);
    }
    println!(
        "removed {} blobs and {} leftover temporary files, freed {}",
        report.removed_blobs,
        report.removed_temp_files,
        output::size(report.freed_bytes)
    );
    Ok(())
}
