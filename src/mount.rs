//! `midasfs mount` and `midasfs demo`: credentials, the background daemon, signals, the mount.
//!
//! Without `--foreground`, `mount` starts itself again in the foreground as a detached child and
//! waits until that child reports through a pipe that the mount is ready, or why it failed; so the
//! command returns only once the mount works, and every error (wrong URL, bad credentials, busy
//! mountpoint) is printed by the command the user typed, with a non-zero exit and no mount left.

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fuser::{Config, MountOption, Session, SessionACL};

use crate::cli::{DemoArgs, MountArgs, Verbosity};
use crate::fs::disk_cache::DiskCache;
use crate::fs::kernel::KernelCaches;
use crate::fs::spool::{self, SpoolConfig};
use crate::fs::write::writeback::WriteBackConfig;
use crate::fs::{names, FsConfig, MidasFs, MountRoot};
use crate::fuse::FuseAdapter;
use crate::midas::types::{Id, User};
use crate::midas::{Client, ClientConfig, Credentials};
use crate::options::{self, MountSettings};
use crate::CliResult;

/// The environment variable that carries the API key (never the command line: `ps` shows that).
pub const API_KEY_ENV: &str = "MIDAS_API_KEY";
/// Set for the background child: the fd of the pipe on which it reports readiness.
const READY_FD_ENV: &str = "MIDASFS_READY_FD";
/// Set when a mount started itself again without [`API_KEY_ENV`]: the fd of a pipe that holds
/// the key (read once by the process that mounts).
const API_KEY_FD_ENV: &str = "MIDASFS_API_KEY_FD";
/// Kernel readahead for the mount (root only): larger READs mean fewer round trips per MiB.
/// Smaller would spare bytes when a file manager reads the first 4 KiB of many files (for that
/// read the kernel asks 16 KiB with a readahead of 128 KiB or more, 8 KiB with 16–124 KiB, and
/// 4 KiB only with 4 KiB), but then every reader that reads in small pieces or through `mmap`
/// waits for READs that small: at 4 KiB, `mmap` reads were 5–8× slower (BENCHMARKS.md, "Rows 3
/// and 9").
const READ_AHEAD_KB: u32 = 1024;
/// Background uploads at once with `--write-back`. A small new file is two requests
/// (`generatetoken`, `perform`): at 20 ms of latency, 4 at once made 10 ms per file whatever the
/// close did, 16 make 2.5 ms, about what a close costs. Each file's uploads still go one at a
/// time, in order.
const WRITE_BACK_UPLOADS: usize = 16;
/// How long the daemon may take to end after SIGINT, SIGTERM or SIGHUP when it has nothing to
/// upload: to unmount and answer the requests under way (a program blocked on a hung server
/// keeps the mount). See [`after_signal`].
const SIGNAL_GRACE: Duration = Duration::from_secs(3);
/// After a signal, the daemon waits for its uploads as long as they move; it leaves once they
/// have sent nothing and no call was answered for this long (the server hangs or is gone).
/// Whatever is left then stays in the spool for the next mount (see [`leave`]).
const SIGNAL_STALL: Duration = Duration::from_secs(10);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `midasfs mount`; `argv` is the command line as `main` parsed it (the background child gets the
/// same one, plus `--foreground`).
pub fn run(args: MountArgs, argv: Vec<OsString>) -> CliResult {
    restart_without_api_key_in_environment()?;
    let args = options::resolve(args)?;
    if args.foreground {
        let ready = std::env::var(READY_FD_ENV)
            .ok()
            .and_then(|fd| fd.parse::<i32>().ok())
            // SAFETY: the parent passed this fd to us for exactly this purpose and nothing else
            // in this process uses it.
            .map(|fd| unsafe { File::from_raw_fd(fd) });
        std::env::remove_var(READY_FD_ENV);
        return run_foreground(args, ready);
    }
    run_in_background(args, argv)
}

/// Starts the daemon and waits for its verdict.
fn run_in_background(args: MountSettings, argv: Vec<OsString>) -> CliResult {
    let password = if args.password_stdin {
        Some(read_password()?)
    } else {
        None
    };
    let (read_end, write_end) = pipe()?;
    // The read end must not leak into the child; the write end must (it is its report channel).
    // SAFETY: fcntl on an fd we own.
    unsafe { libc::fcntl(read_end.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    let mut child_args: Vec<OsString> = argv.into_iter().skip(1).collect();
    child_args.push("--foreground".into());
    let log_path = match &args.log_file {
        Some(path) => path.clone(),
        None => default_log_path(),
    };
    match log_path.parent() {
        // Our own directory: only the user may look into it.
        Some(dir) if args.log_file.is_none() => crate::private::dir(dir)?,
        Some(dir) => std::fs::create_dir_all(dir)?,
        None => {}
    }
    // The log names files and folders the user reads and writes: the user's alone.
    let log = crate::private::file_options()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("cannot open the log file {}: {e}", log_path.display()))?;
    crate::private::file(&log, &log_path)?;
    let mut command = Command::new(std::env::current_exe()?);
    command
        .args(child_args)
        .env(READY_FD_ENV, write_end.as_raw_fd().to_string())
        .stdin(if password.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; it detaches the daemon from the terminal's session.
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    drop(write_end);
    if let (Some(password), Some(mut stdin)) = (password, child.stdin.take()) {
        stdin.write_all(password.as_bytes())?;
    }
    let mut verdict = String::new();
    BufReader::new(File::from(read_end)).read_line(&mut verdict)?;
    match verdict.trim_end() {
        "ready" => Ok(()),
        "" => {
            let status = child.wait()?;
            Err(format!(
                "the mount daemon exited ({status}) before the mount was ready; see {}",
                log_path.display()
            )
            .into())
        }
        message => {
            let _ = child.wait();
            Err(message.trim_start_matches("error: ").to_owned().into())
        }
    }
}

fn default_log_path() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| crate::config::home_dir().map(|h| h.join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("midasfs").join("mount.log")
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe writes two fds into the array we own; both are wrapped right away.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds were just created by pipe and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `/proc/PID/environ` shows the environment a process was started with, whatever it removes
/// from it later, to the user and to root for as long as the process runs. So a mount given
/// [`API_KEY_ENV`] starts itself again (same pid, same arguments) without it, the key waiting
/// in a pipe whose fd [`API_KEY_FD_ENV`] names. Returns only when there is nothing to hide.
fn restart_without_api_key_in_environment() -> Result<(), BoxError> {
    use std::os::unix::process::CommandExt;
    let Some(key) = std::env::var_os(API_KEY_ENV) else {
        return Ok(());
    };
    // The read end goes across the exec below; the write end is closed before it.
    let (read_end, write_end) = pipe()?;
    // A key is far smaller than a pipe's buffer: this never blocks.
    File::from(write_end).write_all(std::os::unix::ffi::OsStrExt::as_bytes(key.as_os_str()))?;
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| "midasfs".into());
    let err = Command::new("/proc/self/exe")
        .arg0(arg0)
        .args(args)
        .env_remove(API_KEY_ENV)
        .env(API_KEY_FD_ENV, read_end.as_raw_fd().to_string())
        .exec();
    Err(format!("cannot start again without {API_KEY_ENV} in the environment: {err}").into())
}

/// The API key given in the environment: from the pipe of
/// [`restart_without_api_key_in_environment`], or (when the caller set it in this process)
/// [`API_KEY_ENV`] itself.
fn api_key_from_environment() -> Result<Option<String>, BoxError> {
    let Some(fd) = std::env::var(API_KEY_FD_ENV).ok() else {
        return Ok(std::env::var(API_KEY_ENV).ok());
    };
    std::env::remove_var(API_KEY_FD_ENV);
    let fd: i32 = fd
        .parse()
        .map_err(|_| format!("{API_KEY_FD_ENV} is not a file descriptor"))?;
    // SAFETY: our own restart passed this fd for exactly this purpose; it is read once, here.
    let mut pipe = unsafe { File::from_raw_fd(fd) };
    let mut key = String::new();
    pipe.read_to_string(&mut key)?;
    Ok(Some(key))
}

fn read_password() -> Result<String, BoxError> {
    let mut password = String::new();
    std::io::stdin().read_to_string(&mut password)?;
    let password = password.lines().next().unwrap_or("").to_owned();
    if password.is_empty() {
        return Err("--password-stdin: no password on standard input".into());
    }
    Ok(password)
}

fn credentials(args: &MountSettings) -> Result<Credentials, BoxError> {
    let key = match &args.api_key_file {
        Some(path) => Some(crate::config::read_key_file(path)?),
        None => api_key_from_environment()?.filter(|k| !k.is_empty()),
    };
    std::env::remove_var(API_KEY_ENV);
    let email = args.email.clone();
    match (email, key, args.password_stdin) {
        (Some(_), Some(_), true) => {
            Err("give either an API key or --password-stdin, not both".into())
        }
        (Some(email), _, true) => Ok(Credentials::Password {
            email,
            password: read_password()?,
        }),
        (Some(email), Some(api_key), false) => Ok(Credentials::ApiKey { email, api_key }),
        (Some(_), None, false) => Err(format!(
            "--email needs a credential: {API_KEY_ENV} in the environment, --api-key-file or --password-stdin"
        )
        .into()),
        (None, Some(_), _) | (None, None, true) => {
            Err("an API key or password needs --email".into())
        }
        (None, None, false) => Ok(Credentials::Anonymous),
    }
}

/// Mounts and serves until unmounted; reports readiness (or the error) on `ready`.
fn run_foreground(args: MountSettings, mut ready: Option<File>) -> CliResult {
    // Signals are handled by one thread (below), so they must be blocked before any other exists.
    let signals = block_termination_signals();
    let result = mount_and_serve(args, signals, &mut ready);
    if let (Err(err), Some(ready)) = (&result, ready.as_mut()) {
        let _ = writeln!(ready, "error: {err}");
    }
    result
}

fn mount_and_serve(
    args: MountSettings,
    signals: libc::sigset_t,
    ready: &mut Option<File>,
) -> CliResult {
    let mountpoint = check_mountpoint(&args.mountpoint)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("midasfs-worker")
        .build()?;
    let client = Client::new(ClientConfig {
        base_url: args.url.clone(),
        credentials: credentials(&args)?,
        connect_timeout: Duration::from_secs(args.connect_timeout),
        stall_timeout: Duration::from_secs(args.timeout),
    })?;
    let me = runtime.block_on(client.connect())?;
    let root = match &args.root {
        Some(spec) => runtime.block_on(resolve_root(&client, me.as_ref(), spec, args.read_only))?,
        None => MountRoot::Everything,
    };
    let disk_cache = disk_cache(&args)?;
    // The filesystem's background work runs on this runtime.
    let entered = runtime.enter();
    let fs = Arc::new(
        MidasFs::new(
            Arc::new(client.clone()),
            me.clone(),
            FsConfig {
                ttl: Duration::from_secs(args.ttl),
                items_as_dirs: args.items_as_dirs,
                read_only: args.read_only,
                cache_bytes: args.cache_size * 1024 * 1024,
                stall_timeout: Duration::from_secs(args.timeout),
                root,
                spool: {
                    let dir = args.spool_dir.clone().unwrap_or_else(spool::default_dir);
                    let keep_free =
                        spool::keep_free_on(dir.ancestors().find(|d| d.exists()).unwrap_or(&dir));
                    SpoolConfig {
                        max_bytes: args
                            .spool_size
                            .map_or(u64::MAX, |mib| mib.saturating_mul(1 << 20)),
                        keep_free,
                        dir,
                    }
                },
            },
        )
        .with_disk_cache(disk_cache)
        .with_leaf_dirs_as_items(args.leaf_dirs_as_items)
        .with_write_back(args.write_back.then(|| WriteBackConfig {
            uploads: WRITE_BACK_UPLOADS,
            unmount_wait: Duration::from_secs(args.write_back_wait),
        })),
    );
    drop(entered);
    runtime.block_on(fs.roll_back_previous());
    fs.resume_uploads();
    fs.keep_times_saved();
    // The first access's listings start now, while the kernel mounts.
    fs.warm_top();
    let handle = runtime.handle().clone();
    let adapter_fs = Arc::clone(&fs);
    let (uid, gid, umask) = (args.uid, args.gid, args.umask);
    let no_passthrough = args.no_passthrough;
    let adapter = move || {
        FuseAdapter::new(Arc::clone(&adapter_fs), handle.clone())
            .with_owner(uid, gid, umask)
            .with_passthrough(!no_passthrough)
    };
    let session = mount(adapter, &mountpoint, &args, client.base_url())?;
    let _control = control_socket(&args, &mountpoint, &client, me.as_ref(), &fs);
    fs.tell_kernel(Arc::new(KernelNotifier(session.notifier())));
    raise_read_ahead(&mountpoint);
    let signal_mountpoint = mountpoint.clone();
    let (signal_fs, finished) = (Arc::clone(&fs), Arc::new(AtomicBool::new(false)));
    let (signal_finished, signal_client) = (Arc::clone(&finished), client.clone());
    std::thread::Builder::new()
        .name("midasfs-signals".into())
        .spawn(move || {
            let signal = wait_for_signal(&signals);
            log::info!(
                "signal {signal}: unmounting {}",
                signal_mountpoint.display()
            );
            // Listings ahead and the warm-up need not finish, nor even start.
            signal_fs.cancel_optional_work();
            unmount(&signal_mountpoint);
            after_signal(
                &signal_fs,
                &signal_client,
                &signals,
                &signal_finished,
                signal,
            );
        })?;
    match &me {
        Some(user) => log::info!(
            "mounted {} at {} as {} {}",
            client.base_url(),
            mountpoint.display(),
            user.firstname,
            user.lastname
        ),
        None => log::info!(
            "mounted {} at {} (anonymous)",
            client.base_url(),
            mountpoint.display()
        ),
    }
    if let Some(mut ready) = ready.take() {
        writeln!(ready, "ready")?;
    }
    session.run()?;
    log::info!("unmounted {}", mountpoint.display());
    wait_for_uploads(&fs);
    runtime.shutdown_timeout(Duration::from_secs(2));
    // The daemon has unmounted and finished its uploads: the signal thread leaves it be.
    finished.store(true, Ordering::Release);
    Ok(())
}

/// After a signal and the unmount it started: the daemon ends by itself once the kernel lets
/// go and the uploads are done. It leaves at once (see [`leave`]) at a second signal;
/// [`SIGNAL_GRACE`] after the signal when no file is being written or uploaded (a program
/// blocked on a hung server keeps the mount, and its request can take minutes to time out);
/// and when the uploads have sent no byte and no call has been answered for [`SIGNAL_STALL`].
/// So a signal never cuts an upload that is moving, however slowly.
fn after_signal(
    fs: &MidasFs,
    client: &Client,
    signals: &libc::sigset_t,
    finished: &AtomicBool,
    signal: i32,
) {
    let moved = || {
        let stats = client.stats();
        (stats.upload_bytes, stats.calls.saturating_sub(stats.errors))
    };
    let signalled = Instant::now();
    let (mut last, mut last_moved) = (moved(), Instant::now());
    let mut said = false;
    loop {
        let again = wait_for_signal_within(signals, Duration::from_millis(250));
        if finished.load(Ordering::Acquire) {
            return;
        }
        if let Some(again) = again {
            leave(fs, again, "at a second signal");
        }
        let now = moved();
        if now != last {
            (last, last_moved) = (now, Instant::now());
        }
        if fs.uploads_in_flight().0 == 0 {
            if signalled.elapsed() >= SIGNAL_GRACE {
                leave(
                    fs,
                    signal,
                    &format!("{SIGNAL_GRACE:?} after signal {signal}"),
                );
            }
        } else if last_moved.elapsed() >= SIGNAL_STALL {
            leave(
                fs,
                signal,
                &format!("after signal {signal}, uploads stalled for {SIGNAL_STALL:?}"),
            );
        } else if !said && signalled.elapsed() >= SIGNAL_GRACE {
            said = true;
            log::info!(
                "signal {signal}: waiting for the uploads under way (another signal stops at once)"
            );
        }
    }
}

/// Ends the daemon at once (see [`after_signal`] for when): the server hangs or is gone, or a
/// program in the mount keeps it. Closing the FUSE device as the process exits fails every
/// request still waiting in the kernel (`ECONNABORTED`), and the mount goes away with it. What
/// is not uploaded stays in the spool, as after a crash: the next mount with this spool
/// directory uploads the files closed with `--write-back` and moves the others to its
/// `recovery/`.
fn leave(fs: &MidasFs, signal: i32, when: &str) -> ! {
    let status = fs.status();
    let spool = status
        .recovery_dir
        .parent()
        .unwrap_or(&status.recovery_dir)
        .to_path_buf();
    if status.files_being_written > 0 {
        log::warn!(
            "signal {signal}: leaving {when} with {} file(s) ({} bytes) not uploaded; their data \
             stays in {}: the next mount with this spool directory uploads those closed with \
             --write-back and moves the others to {}",
            status.files_being_written,
            status.spool_bytes,
            spool.display(),
            status.recovery_dir.display()
        );
    } else {
        log::warn!("signal {signal}: leaving {when}; requests still waiting for the server fail");
    }
    std::process::exit(1)
}

/// Files closed just before the unmount may still be uploading (a close by a process that did
/// not open the file uploads after it returned): let them finish. Every request has a timeout,
/// so this ends.
fn wait_for_uploads(fs: &MidasFs) {
    let mut said = false;
    loop {
        let (files, bytes) = fs.uploads_in_flight();
        if files == 0 || fs.uploads_abandoned() {
            break;
        }
        if !said {
            log::info!("waiting for {files} file(s) ({bytes} bytes) to finish uploading");
            said = true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts answering `midasfs status` (a failure to do so is logged, not fatal).
fn control_socket(
    args: &MountSettings,
    mountpoint: &Path,
    client: &Client,
    me: Option<&User>,
    fs: &Arc<MidasFs>,
) -> Option<crate::control::ControlSocket> {
    let user = match me {
        Some(user) => serde_json::json!({
            "email": user.email,
            "name": format!("{} {}", user.firstname, user.lastname),
            "admin": user.admin,
        }),
        None => serde_json::Value::Null,
    };
    let fixed = serde_json::json!({
        "pid": std::process::id(),
        "url": client.base_url(),
        "mountpoint": mountpoint.to_string_lossy(),
        "profile": args.profile,
        "user": user,
        "read_only": args.read_only,
        "root": args.root,
        "started": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    });
    let (fs, client) = (Arc::clone(fs), client.clone());
    let status = move || {
        let now = fs.status();
        let requests = client.stats();
        let mut answer = fixed.clone();
        answer["uploads"] = serde_json::json!({
            "files_being_written": now.files_being_written,
            "spool_bytes": now.spool_bytes,
            "recovery_files": now.recovery_files,
            "recovery_dir": now.recovery_dir.to_string_lossy(),
        });
        if let Some(wb) = fs.write_back_status() {
            answer["uploads"]["write_back"] = serde_json::json!({
                "pending": wb.pending,
                "failed": wb.failed,
                "last_error": wb.last_error,
            });
        }
        answer["cache"] = serde_json::json!({
            "bytes": now.cache_bytes,
            "capacity": now.cache_capacity,
        });
        answer["walk_ahead"] = serde_json::json!({
            "started": now.listed_ahead,
            "running": now.listing_ahead,
        });
        answer["reads"] = serde_json::json!(now.reads);
        if let Some(disk) = &now.disk_cache {
            answer["disk_cache"] = serde_json::json!({
                "dir": disk.dir.to_string_lossy(),
                "bytes": disk.bytes,
                "capacity": disk.capacity,
                "files": disk.entries,
                "hits": disk.hits,
                "fills": disk.fills,
                "dropped": disk.dropped,
                "passthrough_opens": disk.passthrough_opens,
            });
        }
        answer["requests"] = serde_json::json!({
            "calls": requests.calls,
            "downloads": requests.downloads,
            "download_bytes": requests.download_bytes,
            "upload_parts": requests.upload_parts,
            "upload_bytes": requests.upload_bytes,
            "errors": requests.errors,
            "last_error": requests.last_error,
        });
        answer
    };
    match crate::control::listen(status) {
        Ok(socket) => Some(socket),
        Err(err) => {
            log::warn!("no control socket, so `midasfs status` will not see this mount: {err}");
            None
        }
    }
}

fn mount(
    adapter: impl Fn() -> FuseAdapter,
    mountpoint: &Path,
    args: &MountSettings,
    base_url: &str,
) -> Result<Session<FuseAdapter>, BoxError> {
    let host = base_url.split("://").nth(1).unwrap_or(base_url);
    let mut options = vec![
        MountOption::FSName(format!("midas:{host}")),
        MountOption::Subtype("midasfs".into()),
        MountOption::DefaultPermissions,
        MountOption::NoAtime,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    if args.read_only {
        options.push(MountOption::RO);
    }
    if args.noexec {
        options.push(MountOption::NoExec);
    }
    let mut config = Config::default();
    config.acl = if args.allow_other {
        SessionACL::All
    } else {
        SessionACL::RootAndOwner
    };
    if cfg!(target_os = "linux") {
        config.n_threads = Some(2);
        config.clone_fd = true;
    }
    // AutoUnmount makes fusermount3 clean up if this process dies; it needs the fuse3 package
    // (and user_allow_other for non-root). Without it a crash leaves a stale mount, so say so.
    config.mount_options = options.clone();
    config.mount_options.push(MountOption::AutoUnmount);
    match Session::new(adapter(), mountpoint, &config) {
        Ok(session) => Ok(session),
        Err(err) => {
            log::warn!(
                "mounting with auto_unmount failed ({err}); mounting without it: a crash of \
                 midasfs would then leave a stale mount (install fuse3 to avoid this)"
            );
            config.mount_options = options;
            if !args.allow_other && !args.allow_root {
                config.acl = SessionACL::Owner;
            }
            Session::new(adapter(), mountpoint, &config).map_err(|err| mount_error(err, args))
        }
    }
}

/// A failed mount, with the fix when the cause is known.
fn mount_error(err: std::io::Error, args: &MountSettings) -> BoxError {
    let on_path = |program: &str| {
        std::env::var_os("PATH")
            .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .chain(["/bin".into(), "/usr/bin".into()])
            .any(|dir: PathBuf| dir.join(program).is_file())
    };
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let mountpoint = args.mountpoint.display();
    if !Path::new("/dev/fuse").exists() {
        return "the FUSE device /dev/fuse is missing: `modprobe fuse` (in a container: run it \
                with --device /dev/fuse)"
            .into();
    }
    if !root && !on_path("fusermount3") {
        return "fuse3 is not installed: apt-get install fuse3 (or run as root)".into();
    }
    if err.raw_os_error() == Some(libc::EPERM) && root {
        return format!(
            "cannot mount {mountpoint}: {err} (a container without CAP_SYS_ADMIN? run it \
             with --cap-add SYS_ADMIN --device /dev/fuse)"
        )
        .into();
    }
    format!("cannot mount {mountpoint}: {err}").into()
}

/// The mountpoint must be an existing, empty directory that is not mounted already.
fn check_mountpoint(path: &Path) -> Result<PathBuf, BoxError> {
    let meta = std::fs::metadata(path).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOTCONN) => format!(
            "{} is a stale mount (a midasfs that died?): run `fusermount3 -u {0}` or `umount -l {0}`",
            path.display()
        ),
        _ => format!("mountpoint {}: {e}", path.display()),
    })?;
    if !meta.is_dir() {
        return Err(format!("mountpoint {} is not a directory", path.display()).into());
    }
    if std::fs::read_dir(path)?.next().is_some() {
        return Err(format!(
            "mountpoint {} is not empty (its files would be hidden): use an empty directory",
            path.display()
        )
        .into());
    }
    Ok(std::fs::canonicalize(path)?)
}

/// `--root folder:ID` or `--root /communities/<name>/a/b` or `--root /users/<First>_<Last>/a`.
async fn resolve_root(
    client: &Client,
    me: Option<&User>,
    spec: &str,
    read_only: bool,
) -> Result<MountRoot, BoxError> {
    let mine_or_admin = |owner_root: Option<Id>| {
        !read_only && me.is_some_and(|me| me.admin || owner_root == Some(me.folder_id))
    };
    if let Some(id) = spec.strip_prefix("folder:") {
        let id: Id = id
            .parse()
            .map_err(|_| format!("--root {spec}: folder:ID needs a number"))?;
        let folder = client
            .folder_get(id)
            .await
            .map_err(|e| format!("--root {spec}: {e}"))?;
        // Writable if the folder is in the user's own tree; folder.get tells only the parent, so
        // only a user's top folders and the admin case are recognised here.
        let owner_root = Some(folder.parent_id);
        return Ok(MountRoot::Folder {
            id,
            writable: mine_or_admin(owner_root),
        });
    }
    let mut parts = spec.split('/').filter(|p| !p.is_empty());
    let (top, owner_root) = match (parts.next(), parts.next()) {
        (Some("communities"), Some(name)) => {
            let community = client
                .community_get_by_name(&names::to_midas(name))
                .await
                .map_err(|e| format!("--root {spec}: community {name:?}: {e}"))?;
            (community.folder_id, None)
        }
        (Some("users"), Some(name)) => {
            let midas_name = names::to_midas(name);
            let (first, last) = midas_name
                .split_once('_')
                .ok_or_else(|| format!("--root {spec}: users are named <First>_<Last>"))?;
            let user = client
                .user_get_by_name(first, last)
                .await?
                .ok_or_else(|| format!("--root {spec}: no user {name:?}"))?;
            (user.folder_id, Some(user.folder_id))
        }
        _ => {
            return Err(format!(
            "--root {spec}: expected /communities/<name>/…, /users/<First>_<Last>/… or folder:ID"
        )
            .into())
        }
    };
    let mut folder = top;
    for part in parts {
        let wanted = names::to_midas(part);
        let children = client.folder_children(folder).await?;
        folder = children
            .folders
            .iter()
            .find(|f| f.name == wanted)
            .map(|f| f.folder_id)
            .ok_or_else(|| format!("--root {spec}: no folder {part:?}"))?;
    }
    Ok(MountRoot::Folder {
        id: folder,
        writable: mine_or_admin(owner_root),
    })
}

fn block_termination_signals() -> libc::sigset_t {
    // SAFETY: plain libc signal-mask calls on a set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, signal);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_for_signal(set: &libc::sigset_t) -> i32 {
    let mut signal = 0;
    // SAFETY: sigwait reads the set and writes the signal number into our variable.
    unsafe { libc::sigwait(set, &mut signal) };
    signal
}

/// A signal of `set` that came within `limit`, if any.
fn wait_for_signal_within(set: &libc::sigset_t, limit: Duration) -> Option<i32> {
    let limit = libc::timespec {
        tv_sec: limit.as_secs() as libc::time_t,
        tv_nsec: limit.subsec_nanos() as libc::c_long,
    };
    // SAFETY: sigtimedwait reads the set and the timeout; a null info pointer is allowed.
    let signal = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &limit) };
    (signal > 0).then_some(signal)
}

/// Unmounts; a mount still in use (an open file, a shell inside it) is detached instead, and
/// goes away when its last user leaves. The session loop ends once the kernel lets go.
fn unmount(mountpoint: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(mountpoint.as_os_str().as_bytes()) else {
        return;
    };
    #[cfg(target_os = "linux")]
    let (unmounted, helper) = {
        // SAFETY: umount2 with a valid C string.
        let mut unmounted = unsafe { libc::umount2(path.as_ptr(), 0) } == 0;
        if !unmounted && std::io::Error::last_os_error().raw_os_error() == Some(libc::EBUSY) {
            log::warn!("{} is busy; detaching it", mountpoint.display());
            // SAFETY: as above.
            unmounted = unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } == 0;
        }
        // Not root: the setuid helper may unmount what we mounted.
        (unmounted, ["fusermount3", "-u", "-z"])
    };
    #[cfg(not(target_os = "linux"))]
    let (unmounted, helper) = (
        // SAFETY: unmount with a valid C string.
        unsafe { libc::unmount(path.as_ptr(), 0) } == 0,
        ["umount", "-f", "--"],
    );
    if unmounted {
        return;
    }
    let err = std::io::Error::last_os_error();
    let status = Command::new(helper[0])
        .args(&helper[1..])
        .arg(mountpoint)
        .status();
    if !status.is_ok_and(|s| s.success()) {
        log::error!("could not unmount {} ({err})", mountpoint.display());
    }
}

/// The persistent data cache of `--cache-dir`, opened (and trimmed to its size).
fn disk_cache(args: &MountSettings) -> Result<Option<Arc<DiskCache>>, BoxError> {
    let Some(dir) = &args.cache_dir else {
        return Ok(None);
    };
    let cache = DiskCache::open(dir, args.cache_size_disk)
        .map_err(|err| format!("cache directory {}: {err}", dir.display()))?;
    log::info!(
        "data cache in {} ({} MiB at most)",
        dir.display(),
        args.cache_size_disk >> 20
    );
    Ok(Some(Arc::new(cache)))
}

/// As root, raise the kernel's readahead for this mount (the default is 128 KiB).
fn raise_read_ahead(mountpoint: &Path) {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let target = mountpoint.to_string_lossy();
    let Some(device) = mountinfo.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        (fields.get(4) == Some(&target.as_ref())).then(|| fields.get(2).map(|d| d.to_string()))?
    }) else {
        return;
    };
    let knob = format!("/sys/class/bdi/{device}/read_ahead_kb");
    if let Err(err) = std::fs::write(&knob, READ_AHEAD_KB.to_string()) {
        log::debug!("could not raise readahead ({knob}: {err})");
    }
}

/// Starts `midasfs serve --demo` on a local store and mounts it in the foreground; prints a short
/// summary (the server's per-request log only with `-v`).
pub fn demo(args: DemoArgs, verbosity: Verbosity) -> CliResult {
    let scratch;
    let data = match &args.data {
        Some(dir) => dir.clone(),
        None => {
            // 0700 from the start: the store holds the demo's keys (serve would tighten it, and warn)
            scratch = tempfile::Builder::new()
                .prefix("midasfs-demo-")
                .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .tempdir()?;
            scratch.path().to_owned()
        }
    };
    let demo_dir = DemoMountpoint::choose(args.mountpoint.as_deref())?;
    let mountpoint = demo_dir.path.clone();
    let password = "demo-password";
    let server_log = if verbosity.verbose > 0 {
        "midasfs=info"
    } else {
        "midasfs=warn"
    };
    let mut server = Command::new(std::env::current_exe()?);
    server
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--demo",
            "--admin-password-stdin",
        ])
        .arg("--data")
        .arg(&data)
        .env("RUST_LOG", server_log)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    // The server goes with the demo however it ends, also when a signal ends it at once.
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe and touches only the child's own settings.
    unsafe {
        use std::os::unix::process::CommandExt;
        server.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let mut server = server.spawn()?;
    if let Some(mut stdin) = server.stdin.take() {
        writeln!(stdin, "{password}")?;
    }
    let server_out = server
        .stdout
        .take()
        .ok_or("the demo server has no output")?;
    let (mut url, mut email, mut key) = (None, None, None);
    for line in BufReader::new(server_out).lines() {
        let line = line?;
        if let Some(rest) = line.strip_prefix("midasfs serve listening on ") {
            url = Some(rest.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix("admin email: ") {
            email = Some(rest.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix("admin api key: ") {
            key = Some(rest.trim().to_owned());
        }
        if url.is_some() && email.is_some() && key.is_some() {
            break;
        }
    }
    let (Some(url), Some(email), Some(key)) = (url, email, key) else {
        let _ = server.kill();
        return Err("the demo server did not start".into());
    };
    std::env::set_var(API_KEY_ENV, &key);
    let shown = mountpoint.display().to_string();
    let summary = format!(
        "midasfs demo\n\
         \n  server      {url}  (a local `midasfs serve` with demo data)\
         \n  log in as   {email} / {password}  (also for pydas and the web API)\
         \n  mounted at  {shown}\n\
         \nTry, in another terminal:\
         \n  ls -lR {shown}/communities/Demo/Public\
         \n  cat {shown}/communities/Demo/Public/Docs/README.txt\
         \n  getfattr -d {shown}/communities/Demo/Public/Data/measurements.csv   (needs attr)\
         \n  cp /etc/hostname {shown}/home/Private/      (uploaded on close)\
         \n  midasfs status\n\
         \nCtrl-C here unmounts and stops the server.{}",
        if verbosity.verbose > 0 {
            ""
        } else {
            " Run with -v to see every request."
        }
    );
    // The summary invites the reader to use the mount: it is printed once the mount answers.
    let (read_end, write_end) = pipe()?;
    std::thread::spawn(move || {
        let mut line = String::new();
        if BufReader::new(File::from(read_end))
            .read_line(&mut line)
            .is_ok()
            && line == "ready\n"
        {
            println!("{summary}");
        }
    });
    let mut settings = MountSettings::new(url, mountpoint.clone());
    settings.email = Some(email);
    settings.foreground = true;
    let result = run_foreground(settings, Some(File::from(write_end)));
    let _ = server.kill();
    let _ = server.wait();
    if result.is_ok() {
        println!("unmounted {shown}; demo server stopped");
    }
    result
}

/// Where the demo mounts: the directory given, or one outside the current directory (the demo must
/// leave nothing behind where it was started), removed again afterwards if it is empty.
struct DemoMountpoint {
    path: PathBuf,
    remove_when_done: bool,
}

impl DemoMountpoint {
    fn choose(given: Option<&Path>) -> std::io::Result<DemoMountpoint> {
        if let Some(path) = given {
            std::fs::create_dir_all(path)?;
            return Ok(DemoMountpoint {
                path: path.to_owned(),
                remove_when_done: false,
            });
        }
        // The user's runtime directory is private to them; /tmp is not, so there the name is new.
        let path = match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
            Some(runtime) if runtime.is_absolute() && runtime.is_dir() => {
                let path = runtime.join("midasfs-demo");
                std::fs::create_dir_all(&path)?;
                path
            }
            _ => tempfile::Builder::new()
                .prefix("midasfs-demo-")
                .tempdir()?
                .keep(),
        };
        Ok(DemoMountpoint {
            path,
            remove_when_done: true,
        })
    }
}

impl Drop for DemoMountpoint {
    fn drop(&mut self) {
        // Only an empty directory goes: never anything inside a mount that is still there.
        if self.remove_when_done {
            let _ = std::fs::remove_dir(&self.path);
        }
    }
}

/// The kernel's caches, told through FUSE notifications.
struct KernelNotifier(fuser::Notifier);

impl KernelCaches for KernelNotifier {
    fn attributes_changed(&self, ino: u64) {
        // Offset −1: the attributes only, not the cached content.
        if let Err(err) = self.0.inval_inode(fuser::INodeNo(ino), -1, 0) {
            log::debug!("could not invalidate inode {ino:#x} in the kernel: {err}");
        }
    }

    fn forget_content(&self, ino: u64) -> std::io::Result<()> {
        // From offset 0 to the end (length 0): every page.
        self.0.inval_inode(fuser::INodeNo(ino), 0, 0)
    }

    fn store(&self, ino: u64, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.0.store(fuser::INodeNo(ino), offset, data)
    }
}
