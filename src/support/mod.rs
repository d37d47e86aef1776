//! What every part leans on and none owns: the printer that owns every byte of output (`printer`), hints carried
//! by errors (`hint`), one-line error chains (`error_text`), the environment variables bundle reads
//! (`env_vars`), bounded child processes (`child_process`), free space checked before work (`disk`), file I/O around the page cache (`direct_io`), and concurrent work that
//! lets what is under way finish after a failure (`drain`).

pub mod child_process;
pub mod direct_io;
pub mod disk;
pub mod drain;
pub mod env_vars;
pub mod error_text;
pub mod hint;
pub mod printer;
