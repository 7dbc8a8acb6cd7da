//! signet's test tools (not published): [`mock`], an OpenAI-format upstream that tests start
//! in-process and that misbehaves on request, and [`load`], the load generator behind the
//! `signet-load` binary that the soak and the benchmark drive.

pub mod load;
pub mod mock;
