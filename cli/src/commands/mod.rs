//! One function per verb; each turns validated flags into library calls and
//! prints the result for people or, with `--json`, for scripts.

mod artifact;
mod compile;
mod daemon;
pub mod drift;
mod from_drift;
mod keys;
mod recall;
mod scores;
mod store;
mod train;

use anyhow::Context;
use kolm_artifact::TrustPolicy;
use kolm_store::{Home, Keyring};

use crate::cli::{Cli, Command, TrustArgs};
use crate::progress::Bar;

/// Runs the verb `args` names.
pub fn run(args: Cli) -> anyhow::Result<()> {
    let home = Home::from_env()?;
    let bar = Bar::new(args.quiet);
    match args.command {
        Command::Pack(a) => artifact::pack(&home, a, &bar),
        Command::Inspect(a) => artifact::inspect(&home, a),
        Command::Verify(a) => artifact::verify(&home, a, &bar),
        Command::Install(a) => store::install(&home, a, &bar),
        Command::List(a) => store::list(&home, a.json),
        Command::Show(a) => store::show(&home, a, &bar),
        Command::Rm(a) => store::remove(&home, a),
        Command::Gc(a) => store::gc(&home, a.json),
        Command::Keys(k) => keys::run(&home, k),
        Command::Status(a) => daemon::status(&home, a),
        Command::Ps(a) => daemon::ps(&home, a),
        Command::Load(a) => daemon::load(&home, a),
        Command::Unload(a) => daemon::unload(&home, a),
        Command::Run(a) => daemon::run(&home, a),
        Command::Train(a) => train::train(a, args.quiet),
        Command::Compile(a) => compile::compile(&home, *a, args.quiet),
        Command::Verifier(v) => compile::verifier(&home, v),
        Command::Index(crate::cli::IndexCommand::Build(a)) => recall::build(a, &bar),
        Command::Recall(crate::cli::RecallCommand::Query(a)) => recall::query(&home, a, &bar),
        Command::Drift(d) => drift::run(&home, d),
    }
}

/// The trust policy from the keyring plus `--key` files and `--allow-untrusted`.
fn trust_policy(keyring: &Keyring, args: &TrustArgs) -> anyhow::Result<TrustPolicy> {
    let mut policy = keyring.trust_policy(args.allow_untrusted)?;
    for path in &args.keys {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read public key {}", path.display()))?;
        let key = kolm_artifact::PublicKey::parse(&text)
            .with_context(|| format!("{} is not a kolm public key", path.display()))?;
        policy.keys.push(key.key);
    }
    Ok(policy)
}
