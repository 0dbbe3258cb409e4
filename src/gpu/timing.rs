//! One run of a few launches, timed: for the tile-size tuner (ops::tune), which times each
//! candidate tiling a few times. With TIMESTAMP_QUERY, by timestamps the GPU writes at the
//! start and end of the one compute pass the launches are recorded into; without, on the
//! host, from the submission to the end of the wait for it (which adds the submission's
//! round trip, the same for every candidate).

use std::time::Instant;

use crate::error::{Error, Result};
use crate::gpu::{Gpu, Launch};

/// Bytes of the two resolved timestamps.
const TIMESTAMPS_BYTES: u64 = 2 * wgpu::QUERY_SIZE as u64;

/// Times runs of launches on one device; holds the query set and buffers it reuses.
pub struct Stopwatch {
    /// The query set of two timestamps, the buffer they resolve into and its readable copy;
    /// None without TIMESTAMP_QUERY.
    queries: Option<(wgpu::QuerySet, wgpu::Buffer, wgpu::Buffer)>,
}

impl Stopwatch {
    pub fn new(gpu: &Gpu) -> Stopwatch {
        let queries = gpu
            .features
            .contains(wgpu::Features::TIMESTAMP_QUERY)
            .then(|| {
                let buffer = |label, usage| {
                    gpu.device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some(label),
                        size: TIMESTAMPS_BYTES,
                        usage,
                        mapped_at_creation: false,
                    })
                };
                (
                    gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
                        label: Some("tuning timestamps"),
                        ty: wgpu::QueryType::Timestamp,
                        count: 2,
                    }),
                    buffer(
                        "tuning timestamps resolved",
                        wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    ),
                    buffer(
                        "tuning timestamps read",
                        wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    ),
                )
            });
        Stopwatch { queries }
    }

    /// How this stopwatch times, in words (for the cache file and `cpc info`).
    pub fn source(&self) -> &'static str {
        match self.queries {
            Some(_) => "timestamps",
            None => "host",
        }
    }

    /// Seconds one run of `launches`, recorded into one compute pass, takes.
    pub fn time(&self, gpu: &Gpu, launches: &[&Launch]) -> Result<f64> {
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        {
            let timestamp_writes =
                self.queries
                    .as_ref()
                    .map(|(set, _, _)| wgpu::ComputePassTimestampWrites {
                        query_set: set,
                        beginning_of_pass_write_index: Some(0),
                        end_of_pass_write_index: Some(1),
                    });
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("tuning"),
                timestamp_writes,
            });
            for l in launches {
                l.record(&mut pass);
            }
        }
        let Some((set, resolved, read)) = &self.queries else {
            let start = Instant::now();
            gpu.queue.submit([enc.finish()]);
            gpu.sync("timing a tiling")?;
            return Ok(start.elapsed().as_secs_f64());
        };
        enc.resolve_query_set(set, 0..2, resolved, 0);
        enc.copy_buffer_to_buffer(resolved, 0, read, 0, TIMESTAMPS_BYTES);
        gpu.queue.submit([enc.finish()]);
        let slice = read.slice(..);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        gpu.sync("timing a tiling")?;
        let gpu_error = |message: String| Error::Gpu {
            what: "reading timestamps".into(),
            message,
        };
        rx.recv()
            .map_err(|e| gpu_error(e.to_string()))?
            .map_err(|e| gpu_error(e.to_string()))?;
        let ticks = {
            let view = slice
                .get_mapped_range()
                .map_err(|e| gpu_error(e.to_string()))?;
            let t: &[u64] = bytemuck::cast_slice(&view);
            t[1].saturating_sub(t[0])
        };
        read.unmap();
        // The period is nanoseconds per tick.
        Ok(ticks as f64 * gpu.queue.get_timestamp_period() as f64 * 1e-9)
    }
}
