//! Starting and signalling lab processes.
//!
//! Children run in their own process group, so a Ctrl-C in the terminal reaches
//! the lab (which then stops them in order) rather than every child at once, and a
//! detached lab's children outlive the command that started them.

use crate::error::LabError;
use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts `binary args...` with `env`, appending its output to `log`.
pub fn spawn(
    binary: &Path,
    args: &[&str],
    env: &[(String, String)],
    log: &Path,
) -> Result<Child, LabError> {
    let open_log = || {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| LabError::io(format!("opening log {}", log.display()), e))
    };
    let stdout = open_log()?;
    let stderr = open_log()?;
    let mut command = Command::new(binary);
    command
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0);
    command
        .spawn()
        .map_err(|e| LabError::io(format!("starting {}", binary.display()), e))
}

/// Whether a process with this pid exists (and is not a zombie we could see).
pub fn is_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let exists = unsafe { libc::kill(pid, 0) } == 0;
    exists && !is_zombie(pid)
}

fn is_zombie(pid: i32) -> bool {
    // Field 3 of /proc/PID/stat is the state; 'Z' is a zombie waiting for its
    // parent. The command name (field 2) is in parentheses and may hold spaces.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Sends `signal` to `pid`.
pub fn signal(pid: u32, signal: i32) -> Result<(), LabError> {
    let target =
        i32::try_from(pid).map_err(|_| LabError::Invalid(format!("pid {pid} out of range")))?;
    // SAFETY: plain syscall on a pid this lab started and recorded.
    if unsafe { libc::kill(target, signal) } != 0 {
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::ESRCH) {
            return Err(LabError::io(format!("signalling pid {pid}"), error));
        }
    }
    Ok(())
}

/// Stops several processes at once: SIGTERM to all, then waits for all of
/// them together up to `grace`, then SIGKILLs whatever still runs. `children`
/// `Some` for the ones this process started (reaped through their handle).
pub fn stop_all(mut pids: Vec<(u32, Option<Child>)>, grace: Duration) -> Result<(), LabError> {
    for (pid, _) in &pids {
        signal(*pid, libc::SIGTERM)?;
    }
    let deadline = Instant::now() + grace;
    let mut waiting: Vec<usize> = (0..pids.len()).collect();
    while !waiting.is_empty() && Instant::now() < deadline {
        waiting.retain(|&i| is_alive(pids[i].0));
        if !waiting.is_empty() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    for i in waiting {
        tracing::warn!(
            pid = pids[i].0,
            "still running after the grace period; killing it"
        );
        signal(pids[i].0, libc::SIGKILL)?;
    }
    for (pid, child) in &mut pids {
        match child {
            Some(child) => {
                let _ = child.wait();
            }
            None => {
                let deadline = Instant::now() + Duration::from_secs(5);
                while is_alive(*pid) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
    Ok(())
}

/// Kills `pid` at once (SIGKILL, like a crash) and reaps it if it is our child.
pub fn kill(pid: u32, child: Option<&mut Child>) -> Result<(), LabError> {
    signal(pid, libc::SIGKILL)?;
    if let Some(child) = child {
        let _ = child.wait();
    } else {
        let deadline = Instant::now() + Duration::from_secs(5);
        while is_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

/// A free loopback port, chosen by the OS and never handed out twice by this
/// process (the OS may offer a just-released port again, and one lab asks for many
/// ports before any child binds them).
pub fn free_port() -> Result<u16, LabError> {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    for _ in 0..100 {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
            .map_err(|e| LabError::io("finding a free port", e))?;
        let port = listener
            .local_addr()
            .map(|a| a.port())
            .map_err(|e| LabError::io("finding a free port", e))?;
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return Ok(port);
        }
    }
    Err(LabError::Invalid(
        "could not find an unused loopback port".into(),
    ))
}
