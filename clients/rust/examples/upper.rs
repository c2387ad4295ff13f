//! The README's operator: holds the role `remote` and answers every spawn with the
//! step's prompt upper-cased. Run a server (`cargo run -- serve`), then
//! `cargo run -p mlua-swarm-operator --example upper [http://127.0.0.1:7777]`.
use mlua_swarm_operator::{pb, BoxError, Handler, Operator, SubmitOutcome, Worker};

struct Upper;

impl Handler for Upper {
    async fn on_spawn(&self, _: pb::Spawn, worker: Worker) -> Result<serde_json::Value, BoxError> {
        let prompt = worker.get_prompt().await?;
        worker
            .submit(prompt.prompt.to_uppercase(), SubmitOutcome::Pass)
            .await?;
        Ok(serde_json::Value::Null)
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt::init();
    let url = std::env::args()
        .nth(1)
        .unwrap_or("http://127.0.0.1:7777".into());
    let op = Operator::builder(url)
        .roles(["remote"])
        .connect(Upper)
        .await?;
    op.run().await?;
    Ok(())
}
