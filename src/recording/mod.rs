//! Session recordings (`docs/recording.md`): the file format, what records hold, the recorder
//! that writes a session's recording, and reading one back for replay and bundles.

pub mod event;
pub mod format;
pub mod replay;
