//! Sealing: a compiled result becomes one signed `.kolm` (base, adapter,
//! recipe pack, verifier, eval pack, the examples it learned from, the recall index and its embedder when
//! the task had a corpus, receipts, and a manifest carrying K and its parts,
//! the teacher's identity and the compile parameters). The
//! artifact writer commits with tmp + fsync + rename, so a failed seal
//! leaves nothing at the output path.

use std::path::Path;

use kolm_artifact::manifest::{KScore as ManifestKScore, Teacher as ManifestTeacher};
use kolm_artifact::{names, Component, PackReport, PackSpec, Progress, ReceiptKey, SecretKey};

use super::Compiled;

/// What the artifact is called and who signs it.
#[derive(Debug)]
pub struct SealInputs<'a> {
    /// Artifact name.
    pub name: String,
    /// Artifact version.
    pub version: String,
    /// The task description.
    pub task: String,
    /// The base GGUF.
    pub base: &'a Path,
    /// The teacher's provider.
    pub provider: String,
    /// The teacher's model.
    pub model: String,
    /// Signing keys.
    pub signers: &'a [&'a SecretKey],
    /// The local receipt key (tags the pack receipt).
    pub receipt_key: &'a ReceiptKey,
    /// Where the artifact goes.
    pub out: &'a Path,
}

/// Why sealing failed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The artifact writer refused or failed.
    #[error(transparent)]
    Artifact(#[from] kolm_artifact::ArtifactError),
}

/// Packs and signs `compiled` into `inputs.out`.
pub fn seal(
    compiled: &Compiled,
    inputs: SealInputs<'_>,
    progress: &dyn Progress,
) -> Result<PackReport, SealError> {
    let mut spec = PackSpec::new(&inputs.name, &inputs.version, inputs.base);
    spec.task = Some(inputs.task);
    spec.components.extend([
        Component::new(names::ADAPTER, &compiled.adapter),
        Component::new(names::RECIPES, &compiled.recipes),
        Component::new(names::VERIFIER, &compiled.verifier_file),
        Component::new(names::EVAL, &compiled.eval_file),
        Component::new(names::EXAMPLES, &compiled.examples_file),
    ]);
    if let Some(recall) = &compiled.recall {
        spec.components
            .push(Component::new(names::RECALL_INDEX, &recall.index));
        for (name, path) in &recall.embedder_files {
            spec.components.push(Component::new(name, path));
        }
    }
    let k = &compiled.kscore;
    spec.k_score = Some(ManifestKScore {
        value: k.k,
        accuracy: k.accuracy,
        size: k.size,
        latency: k.latency,
        cost: k.cost,
        coverage: k.coverage,
    });
    spec.teacher = Some(ManifestTeacher {
        provider: inputs.provider,
        model: inputs.model,
    });
    spec.compile = Some(compiled.params.clone());
    spec.receipts = compiled.receipts.clone();
    Ok(kolm_artifact::pack(
        spec,
        inputs.signers,
        inputs.receipt_key,
        inputs.out,
        progress,
    )?)
}
