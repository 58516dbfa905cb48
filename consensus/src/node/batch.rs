//! Group commit: callers that arrive while a commit is under way wait together, and the first
//! of them to get the turn commits them all at once, each told the one outcome.
//!
//! Raft changes its membership one change at a time, each committed before the next: learners
//! admitted one by one during a bulk start of hundreds of storage nodes would wait in a line
//! of hundreds of changes. Batched, they cost a few.

use std::future::Future;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

/// Items waiting for the next commit, each with where its outcome goes.
pub(super) struct Batches<T, R> {
    waiting: Mutex<Vec<(T, oneshot::Sender<R>)>>,
}

impl<T, R> Default for Batches<T, R> {
    fn default() -> Self {
        Batches {
            waiting: Mutex::new(Vec::new()),
        }
    }
}

impl<T, R: Clone> Batches<T, R> {
    /// Adds `item` to the next batch and waits for the turn (`turn`, shared with whatever else
    /// must not run beside a commit); the first waiter to get it commits every item waiting,
    /// with `commit`, and each waiter gets the outcome. `None`: the commit that carried `item`
    /// was dropped half way (its caller went away), so nobody knows whether it took effect.
    pub(super) async fn submit<F, Fut>(
        &self,
        item: T,
        turn: &tokio::sync::Mutex<()>,
        commit: F,
    ) -> Option<R>
    where
        F: FnOnce(Vec<T>) -> Fut,
        Fut: Future<Output = R>,
    {
        let (tx, rx) = oneshot::channel();
        self.lock().push((item, tx));
        {
            let _turn = turn.lock().await;
            let batch = std::mem::take(&mut *self.lock());
            if !batch.is_empty() {
                let (items, outcomes): (Vec<T>, Vec<oneshot::Sender<R>>) =
                    batch.into_iter().unzip();
                let outcome = commit(items).await;
                for tx in outcomes {
                    let _ = tx.send(outcome.clone());
                }
            }
        }
        // Ours was in this batch or in one committed before it.
        rx.await.ok()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<(T, oneshot::Sender<R>)>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// While one commit is under way, five more callers arrive: the next commit carries all
    /// five, and every caller gets its own batch's outcome.
    #[tokio::test]
    async fn callers_arriving_during_a_commit_are_committed_together() {
        let batches: Arc<Batches<u32, usize>> = Arc::default();
        let turn = Arc::new(tokio::sync::Mutex::new(()));
        let commits = Arc::new(Mutex::new(Vec::<Vec<u32>>::new()));
        let (release, held) = oneshot::channel::<()>();
        let (started_tx, started) = oneshot::channel::<()>();

        let first = {
            let (b, t, c) = (batches.clone(), turn.clone(), commits.clone());
            tokio::spawn(async move {
                b.submit(0, &t, |items| async move {
                    let _ = started_tx.send(());
                    let _ = held.await;
                    let n = items.len();
                    c.lock().unwrap().push(items);
                    n
                })
                .await
            })
        };
        started.await.expect("the first commit started");
        let mut rest = Vec::new();
        for i in 1..=5 {
            let (b, t, c) = (batches.clone(), turn.clone(), commits.clone());
            rest.push(tokio::spawn(async move {
                b.submit(i, &t, |items| async move {
                    let n = items.len();
                    c.lock().unwrap().push(items);
                    n
                })
                .await
            }));
        }
        // All five are waiting for the turn before the first commit ends.
        while batches.lock().len() < 5 {
            tokio::task::yield_now().await;
        }
        release.send(()).expect("release the first commit");

        assert_eq!(first.await.unwrap(), Some(1));
        for r in rest {
            assert_eq!(
                r.await.unwrap(),
                Some(5),
                "each of the five: the batch of five"
            );
        }
        let mut seen = commits.lock().unwrap().clone();
        seen[1].sort();
        assert_eq!(seen, vec![vec![0], vec![1, 2, 3, 4, 5]], "two commits");
    }

    /// A commit dropped half way leaves its waiters with no outcome, and the next caller is
    /// committed on its own.
    #[tokio::test]
    async fn a_dropped_commit_tells_its_waiters_nothing() {
        let batches: Arc<Batches<u32, ()>> = Arc::default();
        let turn = Arc::new(tokio::sync::Mutex::new(()));
        let (started_tx, started) = oneshot::channel::<()>();
        let first = {
            let (b, t) = (batches.clone(), turn.clone());
            tokio::spawn(async move {
                b.submit(0, &t, |_| async move {
                    let _ = started_tx.send(());
                    std::future::pending::<()>().await
                })
                .await
            })
        };
        started.await.expect("the first commit started");
        first.abort();
        assert!(first.await.unwrap_err().is_cancelled());
        assert_eq!(batches.submit(1, &turn, |_| async {}).await, Some(()));
    }
}
