//! [`Linker`]: the `results/` links, made on a thread of their own. Each cached or committed
//! instance gets its links as the run goes (the folder follows the run), but checking and
//! making them is file-system work that decides nothing: on the scheduler's thread it was ~16 %
//! of a 5,000-instance no-op. The run waits for the last link before it reports.

use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::cache::{result_links, Cache, Manifest, ResultLink};

type Job = (String, String, Vec<ResultLink>);

pub(super) struct Linker {
    cache: Cache,
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Linker {
    pub fn new(cache: &Cache) -> Linker {
        Linker {
            cache: cache.clone(),
            tx: None,
            thread: None,
        }
    }

    /// Point `results/<pipeline>/<instance>/` at `m`'s outputs, soon.
    pub fn link(&mut self, pipeline: &str, instance: &str, m: &Manifest) {
        let job = (pipeline.to_string(), instance.to_string(), result_links(m));
        if self.tx.is_none() {
            let (tx, rx) = mpsc::channel::<Job>();
            let cache = self.cache.clone();
            let spawned = std::thread::Builder::new()
                .name("results-links".into())
                .spawn(move || {
                    for (pipeline, instance, links) in rx {
                        cache.link_results(&pipeline, &instance, links);
                    }
                });
            match spawned {
                Ok(h) => {
                    self.thread = Some(h);
                    self.tx = Some(tx);
                }
                // No thread to be had: on this one, as before.
                Err(_) => return self.cache.link_results(&job.0, &job.1, job.2),
            }
        }
        if let Some(Err(mpsc::SendError(job))) = self.tx.as_ref().map(|tx| tx.send(job)) {
            self.cache.link_results(&job.0, &job.1, job.2);
        }
    }

    /// Every link asked for is made.
    pub fn finish(&mut self) {
        self.tx = None;
        if let Some(h) = self.thread.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Linker {
    fn drop(&mut self) {
        self.finish();
    }
}
