//! Session recordings (`docs/recording.md`): the file format, what records hold, where files
//! live, reading one back (replay, bundles), the bug bundle and its Playwright script. The
//! recorder itself is `session::recording`; the HTTP side is `recordings`.

pub mod bundle;
pub mod event;
pub mod format;
pub mod playwright;
pub mod read;
pub mod store;
