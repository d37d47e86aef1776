//! `bundle import -d REGISTRY[/PREFIX] FILE…`: the library's import pipeline (`import::pipeline`), called once;
//! it reports as it goes, through the printer, and to the `--json` document through the context's observer.

use super::settings::ImportSettings;
use super::{Context, Outcome};

pub async fn run(ctx: &Context, job: ImportSettings) -> Outcome<()> {
    Ok(crate::import::pipeline::import(ctx.at(), &job).await?)
}
