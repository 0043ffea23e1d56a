//! Resource analysis of running processes (CPU and resident memory, read through
//! [`super::sampler::Processes`]): the peaks seen so far, and the first limit crossed. Canary
//! steps use it on the canary's instances at every analysis interval.

use std::fmt;

use super::sampler::Processes;

/// A limit a process crossed, with the measured value.
#[derive(Debug, Clone, PartialEq)]
pub enum ResourceBreach {
    /// CPU above `max_cpu_percent`.
    Cpu {
        /// The process.
        pid: u32,
        /// Percent of one core, as measured over the last interval.
        percent: f32,
        /// The limit.
        limit: f64,
    },
    /// Resident memory above `max_memory_bytes`.
    Memory {
        /// The process.
        pid: u32,
        /// Bytes resident.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
}

impl fmt::Display for ResourceBreach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResourceBreach::Cpu {
                pid,
                percent,
                limit,
            } => write!(
                f,
                "canary process {pid} used {percent:.0}% CPU (limit {limit:.0}%)"
            ),
            ResourceBreach::Memory { pid, bytes, limit } => write!(
                f,
                "canary process {pid} holds {bytes} bytes of memory (limit {limit})"
            ),
        }
    }
}

/// CPU and memory of a set of processes over time.
pub struct Resources {
    processes: Processes,
    /// The highest CPU percentage seen.
    pub cpu_max: f32,
    /// The highest resident memory seen, in bytes.
    pub memory_max: u64,
}

impl fmt::Debug for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resources")
            .field("cpu_max", &self.cpu_max)
            .field("memory_max", &self.memory_max)
            .finish_non_exhaustive()
    }
}

impl Default for Resources {
    fn default() -> Self {
        Self::new()
    }
}

impl Resources {
    /// Nothing measured yet.
    pub fn new() -> Self {
        Self {
            processes: Processes::default(),
            cpu_max: 0.0,
            memory_max: 0,
        }
    }

    /// Measures `pids` once, keeps the peaks, and returns the first limit crossed. A process
    /// that is gone is skipped (its exit is the restart check's business).
    ///
    /// # Errors
    ///
    /// The [`ResourceBreach`] of the first process over a limit.
    pub fn check(
        &mut self,
        pids: &[u32],
        max_cpu_percent: Option<f64>,
        max_memory_bytes: Option<u64>,
    ) -> Result<(), ResourceBreach> {
        let usage = self.processes.measure(pids);
        for pid in pids {
            let Some(u) = usage.get(pid) else {
                continue;
            };
            let (cpu, memory) = (u.cpu_percent, u.memory_bytes);
            self.cpu_max = self.cpu_max.max(cpu);
            self.memory_max = self.memory_max.max(memory);
            if let Some(limit) = max_cpu_percent
                && f64::from(cpu) > limit
            {
                return Err(ResourceBreach::Cpu {
                    pid: *pid,
                    percent: cpu,
                    limit,
                });
            }
            if let Some(limit) = max_memory_bytes
                && memory > limit
            {
                return Err(ResourceBreach::Memory {
                    pid: *pid,
                    bytes: memory,
                    limit,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_measured_and_a_memory_limit_it_exceeds_is_named() {
        let me = std::process::id();
        let mut r = Resources::new();
        r.check(&[me], None, None).unwrap();
        assert!(r.memory_max > 0, "{r:?}");
        let err = r.check(&[me], None, Some(1)).unwrap_err();
        assert!(
            matches!(err, ResourceBreach::Memory { pid, limit: 1, .. } if pid == me),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("bytes of memory (limit 1)"),
            "{err}"
        );
        // A process that is gone is skipped, not an error.
        r.check(&[u32::MAX - 1], Some(0.0), Some(1)).unwrap();
    }
}
