//! The foundation of `kolmctl compile`: everything the compiler needs that is
//! neither training nor inference.
//!
//! - [`example`] is what an example or test is (its input, text or chat
//!   [`Message`]s, its reference and assertions); every stage speaks it.
//! - [`schema`] is the JSON Schema subset and the output shapes the verifier
//!   infers; [`assertion`] the explicit assertions a test may carry.
//! - [`task`] loads a task: examples and tests as JSONL, a `kolm.toml` task
//!   file, and a seeded held-out split when no tests are given.
//! - [`teacher`] calls a teacher model over an OpenAI-compatible or Anthropic
//!   API with bounded concurrency, retries, cost accounting, a budget and a
//!   content-addressed response cache.
//! - [`verifier`] infers a declarative, deterministic verifier from the
//!   outputs and the tests' assertions, judges candidates and picks a winner.
//! - [`recipes`] (re-exported from `kolm-artifact`, where the runtime reads
//!   it) mines the recipe pack (n-gram contexts → next token) and reads and
//!   writes its binary format.
//! - [`kscore`] computes the K-score from measured numbers.
//! - [`report`] is what a compile tells its caller: progress events and the
//!   final report, as serde types every reader shares.
//!
//! - [`pipeline`] runs the stages (distill, train, decompose, evaluate,
//!   K-score) over a student engine and a trainer the caller plugs in, and
//!   seals the signed artifact.
//!
//! Dependencies between the modules point one way, down this list:
//! `digest`, `kscore` and `schema` are leaves (`schema` uses
//! `digest`); `assertion` uses `schema`; `example` uses `assertion`;
//! `teacher` uses `example`; `verifier` uses `example`, `assertion` and
//! `schema`; `task` (the loader) uses `example`, `assertion` and `teacher`;
//! `pipeline` uses all of them; `report` uses `pipeline`.
//!
//! `docs/compile.md`, `docs/recipes.md` and `docs/k-score.md` describe the
//! formats and formulas implemented here.

pub mod assertion;
pub mod digest;
pub mod example;
pub mod kscore;
pub mod pipeline;
/// The recipe pack lives in `kolm-artifact` (the runtime drafts from it).
pub use kolm_artifact::recipes;
pub mod regression;
pub mod report;
pub mod schema;
pub mod task;
pub mod teacher;
pub mod verifier;

pub use assertion::Assertion;
pub use example::{Example, Input, Message};
pub use kscore::{KScore, KScoreInputs};
pub use recipes::{MineParams, RecipePack, Tokenize};
pub use task::{Task, TaskError, TaskFile};
pub use teacher::{Teacher, TeacherConfig, TeacherError};
pub use verifier::Verifier;
