//! [`Resources`]: the slots the scheduler hands out: concrete GPU ids, CPU job slots, and, on a
//! machine without GPUs, one "heavy lane" on which GPU stages run on the CPU one at a time (they
//! are sized for a GPU; two at once would thrash the CPU and memory).

use std::collections::BTreeSet;

use crate::pipeline::Resources as Ask;

/// Which GPUs this run may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuChoice {
    /// Ask `nvidia-smi`.
    Discover,
    None,
    Ids(Vec<u32>),
}

impl std::str::FromStr for GpuChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("none") || s.is_empty() {
            return Ok(GpuChoice::None);
        }
        if s.eq_ignore_ascii_case("auto") {
            return Ok(GpuChoice::Discover);
        }
        let mut ids = Vec::new();
        for part in s.split(',') {
            let id: u32 = part.trim().parse().map_err(|_| {
                format!(
                    "`{part}` is not a GPU index (expected e.g. `--gpus 0,1,3` or `--gpus none`)"
                )
            })?;
            if ids.contains(&id) {
                return Err(format!("GPU {id} is listed twice"));
            }
            ids.push(id);
        }
        Ok(GpuChoice::Ids(ids))
    }
}

/// GPU indices reported by `nvidia-smi`; none when it is missing or fails.
pub fn discover_gpus() -> Vec<u32> {
    let out = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=index,memory.total", "--format=csv,noheader"])
        .output();
    match out {
        Ok(o) if o.status.success() => parse_nvidia_smi(&String::from_utf8_lossy(&o.stdout)),
        _ => Vec::new(),
    }
}

pub fn parse_nvidia_smi(text: &str) -> Vec<u32> {
    text.lines()
        .filter_map(|l| l.split(',').next())
        .filter_map(|i| i.trim().parse().ok())
        .collect()
}

/// What a running stage holds; given back when it ends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    pub gpus: Vec<u32>,
    pub cpus: u32,
    /// A GPU stage running on the CPU (no GPUs on this machine).
    pub heavy_lane: bool,
}

impl Grant {
    /// `cuda:0,1` or `cpu`.
    pub fn device(&self) -> String {
        if self.gpus.is_empty() {
            "cpu".into()
        } else {
            format!(
                "cuda:{}",
                self.gpus
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            )
        }
    }
    pub fn cuda_visible_devices(&self) -> String {
        self.gpus
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[derive(Debug, Clone)]
pub struct Resources {
    /// Cores of this machine (the CPU-thread budget is shared out of them).
    cores: u32,
    all_gpus: Vec<u32>,
    free_gpus: BTreeSet<u32>,
    jobs: u32,
    free_cpus: u32,
    heavy_free: bool,
}

impl Resources {
    pub fn new(gpus: Vec<u32>, jobs: u32) -> Resources {
        let jobs = jobs.max(1);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        Resources {
            cores,
            free_gpus: gpus.iter().copied().collect(),
            all_gpus: gpus,
            jobs,
            free_cpus: jobs,
            heavy_free: true,
        }
    }

    pub fn gpu_count(&self) -> usize {
        self.all_gpus.len()
    }

    /// How many stages can run at once at most: the CPU job slots plus the GPUs.
    pub fn slots(&self) -> usize {
        self.jobs as usize + self.all_gpus.len()
    }

    /// Why `ask` can never be satisfied here, if so.
    pub fn impossible(&self, ask: &Ask) -> Option<String> {
        if !self.all_gpus.is_empty() && ask.gpus as usize > self.all_gpus.len() {
            return Some(format!(
                "asks for {} GPUs but this run has {} ({:?})",
                ask.gpus,
                self.all_gpus.len(),
                self.all_gpus
            ));
        }
        None
    }

    fn cpu_need(&self, ask: &Ask) -> u32 {
        if ask.gpus > 0 && !self.all_gpus.is_empty() {
            0
        } else {
            ask.cpus.clamp(1, self.jobs)
        }
    }

    /// A stage's CPU-thread budget: its share of the machine's cores, counted in the CPU slots it
    /// holds, each of the `--jobs` slots being `cores / jobs` threads. A stage on the GPU holds no
    /// CPU slot; it gets the share its `resources.cpus` would. At least 1, at most every core.
    pub fn cpu_threads(&self, ask: &Ask, grant: &Grant) -> u32 {
        let slots = if grant.cpus > 0 {
            grant.cpus
        } else {
            ask.cpus.max(1)
        };
        (slots * self.cores / self.jobs).clamp(1, self.cores)
    }

    /// Whether nothing at all can start now: no CPU slot and no GPU is free (every stage needs
    /// one or the other).
    pub fn exhausted(&self) -> bool {
        self.free_cpus == 0 && self.free_gpus.is_empty()
    }

    /// Take the slots `ask` needs, or `None` when they are not free now.
    pub fn try_take(&mut self, ask: &Ask) -> Option<Grant> {
        let cpus = self.cpu_need(ask);
        if cpus > self.free_cpus {
            return None;
        }
        if ask.gpus > 0 && self.all_gpus.is_empty() {
            if !self.heavy_free {
                return None;
            }
            self.heavy_free = false;
            self.free_cpus -= cpus;
            return Some(Grant {
                gpus: Vec::new(),
                cpus,
                heavy_lane: true,
            });
        }
        if ask.gpus as usize > self.free_gpus.len() {
            return None;
        }
        let gpus: Vec<u32> = self
            .free_gpus
            .iter()
            .copied()
            .take(ask.gpus as usize)
            .collect();
        for g in &gpus {
            self.free_gpus.remove(g);
        }
        self.free_cpus -= cpus;
        Some(Grant {
            gpus,
            cpus,
            heavy_lane: false,
        })
    }

    pub fn give_back(&mut self, g: &Grant) {
        self.free_cpus = (self.free_cpus + g.cpus).min(self.jobs);
        for id in &g.gpus {
            debug_assert!(!self.free_gpus.contains(id), "GPU {id} given back twice");
            self.free_gpus.insert(*id);
        }
        if g.heavy_lane {
            self.heavy_free = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(gpus: u32, cpus: u32) -> Ask {
        Ask {
            gpus,
            cpus,
            ..Default::default()
        }
    }

    #[test]
    fn gpus_are_never_shared() {
        let mut r = Resources::new(vec![0, 1, 2], 4);
        let a = r.try_take(&ask(2, 0)).unwrap();
        assert_eq!(a.gpus, vec![0, 1]);
        assert!(r.try_take(&ask(2, 0)).is_none());
        let b = r.try_take(&ask(1, 0)).unwrap();
        assert_eq!(b.gpus, vec![2]);
        r.give_back(&a);
        assert_eq!(
            r.try_take(&ask(2, 0)).unwrap().cuda_visible_devices(),
            "0,1"
        );
        assert!(r.impossible(&ask(4, 0)).is_some());
    }

    #[test]
    fn without_gpus_gpu_stages_take_the_single_heavy_lane() {
        let mut r = Resources::new(vec![], 4);
        let a = r.try_take(&ask(1, 0)).unwrap();
        assert_eq!(a.device(), "cpu");
        assert!(r.try_take(&ask(1, 0)).is_none());
        assert!(r.try_take(&ask(0, 1)).is_some());
        r.give_back(&a);
        assert!(r.try_take(&ask(1, 0)).is_some());
        assert!(r.impossible(&ask(8, 0)).is_none());
    }

    #[test]
    fn cpu_slots_bound_parallelism() {
        let mut r = Resources::new(vec![], 2);
        let a = r.try_take(&ask(0, 0)).unwrap();
        let _b = r.try_take(&ask(0, 1)).unwrap();
        assert!(r.try_take(&ask(0, 1)).is_none());
        r.give_back(&a);
        assert!(
            r.try_take(&ask(0, 5)).is_none(),
            "clamped to jobs=2 but only 1 free"
        );
    }

    #[test]
    fn cpu_threads_are_the_cores_share_of_the_slots_held() {
        let mut r = Resources::new(vec![], 2);
        r.cores = 8;
        let one = r.try_take(&ask(0, 1)).unwrap();
        assert_eq!(r.cpu_threads(&ask(0, 1), &one), 4, "8 cores / 2 slots");
        r.give_back(&one);
        let both = r.try_take(&ask(0, 2)).unwrap();
        assert_eq!(r.cpu_threads(&ask(0, 2), &both), 8);
        let mut r = Resources::new(vec![0], 16);
        r.cores = 4;
        let cpu = r.try_take(&ask(0, 1)).unwrap();
        assert_eq!(r.cpu_threads(&ask(0, 1), &cpu), 1, "never below one thread");
        let gpu = r.try_take(&ask(1, 8)).unwrap();
        assert_eq!(gpu.cpus, 0, "a GPU stage holds no CPU slot");
        assert_eq!(
            r.cpu_threads(&ask(1, 8), &gpu),
            2,
            "its cpus ask: 8 of 16 slots"
        );
    }

    #[test]
    fn parses_gpu_lists() {
        assert_eq!(
            "0,1,3".parse::<GpuChoice>().unwrap(),
            GpuChoice::Ids(vec![0, 1, 3])
        );
        assert_eq!("none".parse::<GpuChoice>().unwrap(), GpuChoice::None);
        assert!("0,x".parse::<GpuChoice>().unwrap_err().contains("`x`"));
        assert_eq!(parse_nvidia_smi("0, 81559 MiB\n1, 81559 MiB\n"), vec![0, 1]);
    }
}
