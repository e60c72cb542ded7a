//! A background writer's own thread (the read model's projectors, the change stream's
//! and the history's writers): a single-threaded runtime at a lower nice value, so
//! folding runs and parsing journal read-backs neither wait on nor hold up the serving
//! runtime's workers.

/// Runs `task` to its end on a new thread named `name`, at nice `nice`, with a
/// single-threaded runtime of its own; the receiver hears when it has ended.
pub(crate) fn on_own_thread(
    name: String,
    nice: i32,
    task: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<tokio::sync::oneshot::Receiver<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (ended, ended_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name(name).spawn(move || {
        set_thread_nice(nice);
        runtime.block_on(task);
        let _ = ended.send(());
    })?;
    Ok(ended_rx)
}

/// Sets the calling thread's nice value (Linux: nice is per thread). Best effort: where
/// it is refused, the thread runs at the serving threads' priority (logged).
fn set_thread_nice(nice: i32) {
    if nice == 0 {
        return;
    }
    // SAFETY: plain system calls on the calling thread's own id; no memory is passed.
    let refused = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, nice) != 0
    };
    if refused {
        tracing::warn!(
            nice,
            error = %std::io::Error::last_os_error(),
            thread = std::thread::current().name().unwrap_or("?"),
            "cannot lower a background writer thread's priority; it runs at the serving threads'"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The calling thread's nice value, from /proc (field 19 of its stat line).
    fn own_nice() -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // The command name (field 2) may hold spaces: count from after its ')'.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        rest.split(' ').nth(16).unwrap().parse().unwrap()
    }

    #[test]
    fn a_projector_thread_runs_its_task_at_its_nice_and_says_when_it_ended() {
        let before = own_nice();
        let (seen_tx, seen) = std::sync::mpsc::channel();
        let ended = on_own_thread("gs-test-nice".to_owned(), 7, async move {
            // A timer works: the thread has a runtime of its own.
            tokio::time::sleep(Duration::from_millis(5)).await;
            let name = std::thread::current().name().map(str::to_owned);
            seen_tx.send((own_nice(), name)).unwrap();
        })
        .unwrap();
        let (nice, name) = seen.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(nice, before + 7);
        assert_eq!(name.as_deref(), Some("gs-test-nice"));
        assert_eq!(own_nice(), before, "the caller's priority is unchanged");
        assert!(ended.blocking_recv().is_ok());
    }
}
