//! The foundation of `kolmctl compile`: everything the compiler needs that is
//! neither training nor inference.
//!
//! - [`task`] loads a task: examples and tests as JSONL, a `kolm.toml` task
//!   file, and a seeded held-out split when no tests are given.
//! - [`teacher`] calls a teacher model over an OpenAI-compatible or Anthropic
//!   API with bounded concurrency, retries, cost accounting, a budget and a
//!   content-addressed response cache.
//! - [`verifier`] infers a declarative, deterministic verifier from the
//!   outputs and the tests' assertions, judges candidates and picks a winner.
//! - [`recipes`] mines the recipe pack (n-gram contexts → next token) and
//!   reads and writes its binary format.
//! - [`kscore`] computes the K-score from measured numbers.
//! - [`report`] is what a compile tells its caller: progress events and the
//!   final report, as serde types every reader shares.
//!
//! - [`pipeline`] runs the stages (distill, train, decompose, evaluate,
//!   K-score) over a student engine and a trainer the caller plugs in, and
//!   seals the signed artifact.
//!
//! `docs/compile.md`, `docs/recipes.md` and `docs/k-score.md` describe the
//! formats and formulas implemented here.

pub mod digest;
pub mod kscore;
pub mod pipeline;
/// The recipe pack lives in `kolm-artifact` (the runtime drafts from it).
pub use kolm_artifact::recipes;
pub mod report;
pub mod task;
pub mod teacher;
pub mod verifier;

pub use kscore::{KScore, KScoreInputs};
pub use recipes::{MineParams, RecipePack, Tokenize};
pub use task::{Example, Input, Message, Task, TaskError, TaskFile};
pub use teacher::{Teacher, TeacherConfig, TeacherError};
pub use verifier::{Assertion, Verifier};
