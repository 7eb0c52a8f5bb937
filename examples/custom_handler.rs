//! A user-written stateful actor as a task handler.
//!
//! `RateCard` is an ordinary ractor actor that owns state (prices it has been told, and how
//! many quotes it gave). The `quote` task handler asks it through a typed call, so many
//! workers share one piece of state without locks, and the state lives as long as the actor.
//!
//! ```text
//! cargo run --release --example custom_handler
//! ```

use std::collections::HashMap;
use std::time::Duration;

use ractor::{call_t, Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use wrangle::prelude::*;

/// The rate card's messages.
enum RateCardMsg {
    /// Set the price of an item, in cents.
    SetPrice(String, u64),
    /// Quote `quantity` of an item; `None` for an unknown item.
    Quote {
        item: String,
        quantity: u64,
        reply: RpcReplyPort<Option<u64>>,
    },
    /// How many quotes were given.
    Count(RpcReplyPort<u64>),
}

impl ractor::Message for RateCardMsg {}

/// The rate card actor.
struct RateCard;

/// Its state: prices, and a counter.
struct RateCardState {
    prices: HashMap<String, u64>,
    quotes: u64,
}

impl Actor for RateCard {
    type Msg = RateCardMsg;
    type State = RateCardState;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<RateCardMsg>,
        _: (),
    ) -> Result<RateCardState, ActorProcessingErr> {
        Ok(RateCardState {
            prices: HashMap::new(),
            quotes: 0,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<RateCardMsg>,
        msg: RateCardMsg,
        state: &mut RateCardState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RateCardMsg::SetPrice(item, cents) => {
                state.prices.insert(item, cents);
            }
            RateCardMsg::Quote {
                item,
                quantity,
                reply,
            } => {
                state.quotes += 1;
                let _ = reply.send(state.prices.get(&item).map(|p| p * quantity));
            }
            RateCardMsg::Count(reply) => {
                let _ = reply.send(state.quotes);
            }
        }
        Ok(())
    }
}

/// The `quote` task's input.
#[derive(Serialize, Deserialize)]
struct QuoteRequest {
    item: String,
    quantity: u64,
}

/// The `quote` task handler: a thin bridge from tasks to the rate card actor.
struct QuoteHandler {
    card: ActorRef<RateCardMsg>,
}

impl TaskHandler for QuoteHandler {
    type Input = QuoteRequest;
    type Output = u64;

    async fn handle(&self, _ctx: TaskContext, req: QuoteRequest) -> Result<u64, TaskError> {
        let item = req.item.clone();
        let quote = call_t!(
            self.card,
            |reply| RateCardMsg::Quote {
                item: req.item,
                quantity: req.quantity,
                reply,
            },
            1_000
        )
        // The card not answering may be temporary: let the queue retry.
        .map_err(|e| TaskError::retryable(format!("rate card unavailable: {e}")))?;
        // An unknown item will not become known by retrying.
        quote.ok_or_else(|| TaskError::permanent(format!("no price for `{item}`")))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (card, _) = Actor::spawn(None, RateCard, ()).await?;
    card.send_message(RateCardMsg::SetPrice("gpu-hour".into(), 250))?;
    card.send_message(RateCardMsg::SetPrice("token-1k".into(), 2))?;

    let coordinator = Coordinator::builder()
        .handler("quote", QuoteHandler { card: card.clone() })
        .start()
        .await?;

    let mut handles = Vec::new();
    for (item, quantity) in [("gpu-hour", 8), ("token-1k", 1500), ("gpu-hour", 1)] {
        let spec = TaskSpec::new(
            "quote",
            &QuoteRequest {
                item: item.into(),
                quantity,
            },
        )?;
        handles.push((item, quantity, coordinator.submit_async(spec).await?));
    }
    for (item, quantity, handle) in handles {
        let cents: u64 = handle.result(Duration::from_secs(5)).await?;
        println!("{quantity} x {item}: {cents} cents");
    }

    // An unknown item fails permanently, with the handler's message, and is dead-lettered.
    let err = coordinator
        .submit(
            "quote",
            &QuoteRequest {
                item: "moon".into(),
                quantity: 1,
            },
        )
        .await
        .unwrap_err();
    println!("unknown item: {err}");
    println!(
        "dead letters: {}",
        coordinator.dead_letters(10).await?.len()
    );

    let quotes = call_t!(card, RateCardMsg::Count, 1_000)?;
    println!("the rate card gave {quotes} quotes");
    coordinator.stop(true).await?;
    card.stop(None);
    Ok(())
}
