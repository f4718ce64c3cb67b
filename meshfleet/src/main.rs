/// mimalloc rather than glibc's malloc: after a burst (thousands of agents
/// reconnecting and long-polling at once) it gives freed pages back to the
/// system, where glibc keeps most of the burst's peak (`bench/longpoll.sh`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    meshfleet::cli::main()
}
