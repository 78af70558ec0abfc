//! Ping-pong between MPI ranks 0 and 1: the latency and bandwidth of one blocking MPI message
//! each way, for sizes from 1 KiB to 64 MiB — what MPI itself costs on this machine, under the
//! communication thread's own hop (see the README's measured per-action overhead).
//!
//! `cargo build --release --features mpi --example mpi_pingpong`, then
//! `mpirun -n 2 target/release/examples/mpi_pingpong [REPS]` prints, per size, the median
//! one-way time (half a round trip) over REPS round trips (default 20) after two warm-ups, and
//! the bandwidth it implies.

use std::time::Instant;

use mpi::traits::*;

fn main() {
    let reps: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(20).max(1);
    let universe = mpi::initialize().expect("MPI starts once");
    let world = universe.world();
    if world.size() != 2 {
        if world.rank() == 0 {
            eprintln!("error: mpi_pingpong needs exactly 2 processes (mpirun -n 2); got {}", world.size());
        }
        std::process::exit(2);
    }
    let (me, other) = (world.rank(), world.process_at_rank(1 - world.rank()));
    if me == 0 {
        println!("{:>10}  {:>12}  {:>12}", "bytes", "one way (µs)", "GiB/s");
    }
    for shift in (10..=26).step_by(2) {
        let n = 1usize << shift;
        let mut buf = vec![1u8; n];
        let mut times = Vec::with_capacity(reps);
        for k in 0..reps + 2 {
            let t = Instant::now();
            if me == 0 {
                other.send(&buf[..]);
                other.receive_into(&mut buf[..]);
            } else {
                other.receive_into(&mut buf[..]);
                other.send(&buf[..]);
            }
            if k >= 2 {
                times.push(t.elapsed().as_secs_f64() / 2.0);
            }
        }
        times.sort_by(f64::total_cmp);
        let one_way = times[times.len() / 2];
        if me == 0 {
            println!("{n:>10}  {:>12.1}  {:>12.2}", one_way * 1e6, n as f64 / one_way / (1u64 << 30) as f64);
        }
    }
}
