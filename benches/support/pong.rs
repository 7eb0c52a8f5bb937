//! The baseline both benchmarks measure wrangle against: the smallest ractor actor, which
//! answers pings (`call` round-trips) and counts casts. Included by `benches/throughput.rs`
//! and `examples/bench_report.rs`.

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

/// The smallest actor: answers pings, counts casts.
pub(crate) struct Pong;

pub(crate) enum PongMsg {
    Ping(RpcReplyPort<()>),
    Cast,
}

impl ractor::Message for PongMsg {}

impl Actor for Pong {
    type Msg = PongMsg;
    type State = u64;
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<PongMsg>, _: ()) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }

    async fn handle(
        &self,
        _: ActorRef<PongMsg>,
        msg: PongMsg,
        casts: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PongMsg::Ping(reply) => {
                let _ = reply.send(());
            }
            PongMsg::Cast => *casts += 1,
        }
        Ok(())
    }
}
