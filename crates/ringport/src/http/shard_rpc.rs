//! Asking shards from the control plane and awaiting their answers.
//!
//! A [`Gateway`](super::Gateway) implementation posts a closure to each shard (with
//! `EngineHandle::run`) carrying a [`Replier`]; the closure runs on the shard thread, computes
//! its part (recipients in its room index, its connection counts, ...) and replies. The HTTP
//! handler awaits every reply with one deadline. A shard that exits without replying, or
//! misses the deadline, turns into [`GatewayError::Unavailable`] instead of a hung request.
//!
//! ```ignore
//! let counts = ask_all(handle.shards(), SHARD_REPLY_TIMEOUT, |shard, reply| {
//!     handle.run(shard, move |h: &mut GatewayHandler, _ctx| reply.send(h.room_len(&room)))
//! })
//! .await?;
//! ```

use std::time::Duration;

use tokio::sync::oneshot;

use super::gateway::GatewayError;

/// A sensible default deadline for one fan-out: shards answer within a loop iteration.
pub const SHARD_REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// The reply slot handed to a shard; `Send` when `T` is, so it can ride in the closure.
#[derive(Debug)]
pub struct Replier<T>(oneshot::Sender<T>);

impl<T> Replier<T> {
    /// Delivers the shard's answer (ignored if the request already gave up).
    pub fn send(self, value: T) {
        let _ = self.0.send(value);
    }
}

/// The one "post to every shard" helper: posts one question per shard with
/// `post(shard, replier)` (all of them before the first `.await`) and collects the answers
/// in shard order, all within `timeout`. (Message delivery does not come through here: it
/// goes through the per-shard queues of `gateway/handoff.rs`.)
pub async fn ask_all<T>(
    shards: usize,
    timeout: Duration,
    mut post: impl FnMut(usize, Replier<T>),
) -> Result<Vec<T>, GatewayError> {
    let mut pending = Vec::with_capacity(shards);
    for shard in 0..shards {
        let (tx, rx) = oneshot::channel();
        post(shard, Replier(tx));
        pending.push(rx);
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut answers = Vec::with_capacity(shards);
    for (shard, rx) in pending.into_iter().enumerate() {
        answers.push(wait(shard, rx, deadline, timeout).await?);
    }
    Ok(answers)
}

/// Posts one question to one shard and awaits its answer within `timeout`.
pub async fn ask_one<T>(
    shard: usize,
    timeout: Duration,
    post: impl FnOnce(Replier<T>),
) -> Result<T, GatewayError> {
    let (tx, rx) = oneshot::channel();
    post(Replier(tx));
    wait(shard, rx, tokio::time::Instant::now() + timeout, timeout).await
}

async fn wait<T>(
    shard: usize,
    rx: oneshot::Receiver<T>,
    deadline: tokio::time::Instant,
    timeout: Duration,
) -> Result<T, GatewayError> {
    match tokio::time::timeout_at(deadline, rx).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(_)) => Err(GatewayError::Unavailable(format!(
            "shard {shard} stopped before replying"
        ))),
        Err(_) => Err(GatewayError::Unavailable(format!(
            "shard {shard} did not reply within {} ms",
            timeout.as_millis()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::thread;

    type Job = Box<dyn FnOnce(usize) + Send>;

    /// Stand-in shards: threads running posted closures with their index.
    fn shards(n: usize) -> (Vec<mpsc::Sender<Job>>, Vec<thread::JoinHandle<()>>) {
        (0..n)
            .map(|i| {
                let (tx, rx) = mpsc::channel::<Job>();
                let t = thread::spawn(move || {
                    for job in rx {
                        job(i);
                    }
                });
                (tx, t)
            })
            .unzip()
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    #[test]
    fn gathers_in_shard_order() {
        let (inboxes, threads) = shards(3);
        let answers = rt()
            .block_on(ask_all(
                3,
                Duration::from_secs(5),
                |shard, reply: Replier<usize>| {
                    let job: Job = Box::new(move |i| reply.send(i * 10));
                    inboxes[shard].send(job).unwrap();
                },
            ))
            .unwrap();
        assert_eq!(answers, vec![0, 10, 20]);
        drop(inboxes);
        threads.into_iter().for_each(|t| t.join().unwrap());
    }

    #[test]
    fn a_shard_that_drops_the_replier_is_unavailable() {
        let err = rt()
            .block_on(ask_all(
                2,
                Duration::from_secs(5),
                |shard, reply: Replier<u8>| {
                    if shard == 0 {
                        reply.send(1);
                    } // shard 1 "exited": the replier is dropped
                },
            ))
            .unwrap_err();
        assert_eq!(
            err,
            GatewayError::Unavailable("shard 1 stopped before replying".into())
        );
    }

    #[test]
    fn a_silent_shard_times_out() {
        let mut keep = Vec::new();
        let err = rt()
            .block_on(ask_one(
                4,
                Duration::from_millis(20),
                |reply: Replier<u8>| keep.push(reply),
            ))
            .unwrap_err();
        assert_eq!(
            err,
            GatewayError::Unavailable("shard 4 did not reply within 20 ms".into())
        );
    }
}
