//! [`Linker`]: the `results/` links, made on a thread of their own. Each cached or committed
//! instance gets its links as the run goes (the folder follows the run), but checking and
//! making them is file-system work that decides nothing: on the scheduler's thread it was ~16 %
//! of a 5,000-instance no-op. The run waits for the last link before it reports.
//!
//! Links go to the thread in batches: one message per instance woke the thread (and the
//! scheduler, through glibc's arena lock when the thread freed what the scheduler allocated)
//! once per instance, and those futex calls were ~30 % of the scheduler thread's samples in a
//! 5,000-instance no-op. A batch is sent when it is full, or when the scheduler is about to
//! wait ([`Linker::flush`]), so a committed instance's links never wait for later ones.

use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::cache::{result_links, Cache, Manifest, ResultLink};

type Job = (String, String, Vec<ResultLink>);

/// Instances per message to the thread.
const BATCH: usize = 128;

pub(super) struct Linker {
    cache: Cache,
    pending: Vec<Job>,
    tx: Option<mpsc::Sender<Vec<Job>>>,
    thread: Option<JoinHandle<()>>,
}

impl Linker {
    pub fn new(cache: &Cache) -> Linker {
        Linker {
            cache: cache.clone(),
            pending: Vec::new(),
            tx: None,
            thread: None,
        }
    }

    /// Point `results/<pipeline>/<instance>/` at `m`'s outputs, soon.
    pub fn link(&mut self, pipeline: &str, instance: &str, m: &Manifest) {
        let links = result_links(m);
        if links.is_empty() {
            return;
        }
        self.pending
            .push((pipeline.to_string(), instance.to_string(), links));
        if self.pending.len() >= BATCH {
            self.flush();
        }
    }

    /// Hand what is pending to the thread (started on the first batch).
    pub fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut self.pending, Vec::with_capacity(BATCH));
        if self.tx.is_none() {
            let (tx, rx) = mpsc::channel::<Vec<Job>>();
            let cache = self.cache.clone();
            let spawned = std::thread::Builder::new()
                .name("results-links".into())
                .spawn(move || {
                    for batch in rx {
                        make(&cache, batch);
                    }
                });
            match spawned {
                Ok(h) => {
                    self.thread = Some(h);
                    self.tx = Some(tx);
                }
                // No thread to be had: on this one, as before.
                Err(_) => return make(&self.cache, batch),
            }
        }
        if let Some(Err(mpsc::SendError(batch))) = self.tx.as_ref().map(|tx| tx.send(batch)) {
            make(&self.cache, batch);
        }
    }

    /// Every link asked for is made.
    pub fn finish(&mut self) {
        self.flush();
        self.tx = None;
        if let Some(h) = self.thread.take() {
            let _ = h.join();
        }
    }
}

fn make(cache: &Cache, batch: Vec<Job>) {
    for (pipeline, instance, links) in batch {
        cache.link_results(&pipeline, &instance, links);
    }
}

impl Drop for Linker {
    fn drop(&mut self) {
        self.finish();
    }
}
