//! `kolmctl keys`: generate signing keys, list, export and trust public keys.

use anyhow::Context;
use kolm_store::Home;
use serde_json::json;

use crate::cli::KeysCommand;
use crate::output;

pub fn run(home: &Home, command: KeysCommand) -> anyhow::Result<()> {
    let keyring = home.keyring();
    match command {
        KeysCommand::Generate { name, json } => {
            let public = keyring.generate(&name)?;
            if json {
                return output::json(
                    &json!({ "ok": true, "name": public.name, "keyid": public.keyid() }),
                );
            }
            outln!(
                "created signing key `{}` ({}) in {}; it is trusted on this machine",
                public.name,
                output::short(&public.keyid()),
                home.root().join("keys").display()
            );
            outln!(
                "share its public half with `kolmctl keys export {}`",
                public.name
            );
        }
        KeysCommand::List { json } => {
            let keys = keyring.list()?;
            if json {
                return output::json(&keys);
            }
            if keys.is_empty() {
                outln!("no keys (create one with `kolmctl keys generate`)");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = keys
                .iter()
                .map(|k| {
                    vec![
                        k.name.clone(),
                        k.keyid.clone(),
                        if k.has_secret { "yes" } else { "no" }.into(),
                        if k.trusted { "yes" } else { "no" }.into(),
                    ]
                })
                .collect();
            output::table(&["NAME", "KEYID", "CAN SIGN", "TRUSTED"], &rows);
        }
        KeysCommand::Export { name } => {
            let public = keyring
                .public(Some(&name))
                .with_context(|| format!("cannot export key `{name}`"))?;
            out!("{}", public.to_line());
        }
        KeysCommand::Trust { file, json } => {
            let public = keyring.trust(&file)?;
            if json {
                return output::json(
                    &json!({ "ok": true, "name": public.name, "keyid": public.keyid() }),
                );
            }
            outln!(
                "trusted `{}` ({}): artifacts it signs now verify",
                public.name,
                output::short(&public.keyid())
            );
        }
    }
    Ok(())
}
