//! Gantry's feature-flag evaluator: flagd's flag-definition JSON, evaluated exactly as
//! flagd's reference evaluator does, with OpenFeature's reasons. No I/O: the agent feeds it
//! the bytes of a signed flag set, the context of a request and the time.
//!
//! # Layout
//!
//! * [`definition`]: the JSON, parsed into a [`FlagSet`] of [`Flag`]s (`$evaluators`
//!   resolved, targeting compiled once); [`DefinitionError`].
//! * [`resolve`]: one flag for one context: value, variant, [`Reason`], [`ErrorCode`];
//!   typed and bulk evaluation.
//! * [`logic`]: JsonLogic compiled to a tree, with JavaScript's value semantics (`js`) and
//!   flagd's operators `fractional`, `sem_ver`, `starts_with`, `ends_with` (`flagd`).
//! * [`canary`]: a canary's split of one flag between its canary variant and its default.
//! * [`diff`]: the flags a new set adds, changes and removes, and the kill-switch rule
//!   (only switching flags off).

pub mod canary;
pub mod definition;
pub mod diff;
pub mod logic;
pub mod resolve;

pub use canary::{CANARY_VARIANT, SplitError};
pub use definition::{DefinitionError, Flag, FlagSet, State, Targeting};
pub use diff::{Changes, NotAKillSwitch, changes, check_kill_switch};
pub use resolve::{ErrorCode, Reason, Resolution, ValueType};
