//! Session recordings (`docs/recording.md`): the file format, what records hold, where files
//! live, reading one back, the bug bundle and its Playwright script, and `cobrowse replay`. The
//! recorder itself is `session::recording`; the server's HTTP side is `recordings`.

pub mod bundle;
pub mod event;
pub mod format;
pub mod playwright;
pub mod read;
pub mod replay;
pub mod store;
