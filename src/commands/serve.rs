//! `bundle serve ARCHIVE…`: the library's server (`serve::serve`), called once; it stops on SIGINT or SIGTERM.

use super::settings::ServeSettings;
use super::{Context, Outcome};

pub async fn run(ctx: &Context, job: ServeSettings) -> Outcome<()> {
    Ok(crate::serve::serve(&ctx.printer, &job).await?)
}
