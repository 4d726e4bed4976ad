//! Errors of the service layer: what a service run ended with, and what a setting got wrong.

use crate::error::TrimmedEnd;
use std::fmt::{self, Write as _};
use std::time::Duration;

pub use crate::BoxError;

/// Why a service, group, sequence or restarter stopped with an error.
///
/// Every variant that is about one service carries its `name`, and its `Display` starts with
/// `"name: "`, so a [`Failures`](ServiceError::Failures) list prints as one `name: error` item
/// per failed service. A nested group's failures print as a path (`"outer: inner: error"`),
/// several in brackets (`"outer: inner: [a: error; b: error]; c: error"`).
///
/// `Display`, `{:?}` and `{:#?}` (the same text `derive(Debug)` writes) use an explicit stack,
/// not recursion, and so does dropping it, so an error of containers nested any number of
/// levels deep prints and drops on any thread's stack.
///
/// # Sources
///
/// As the core's errors do, [`source`](std::error::Error::source) returns what `Display` did
/// not write, so a chain printed whole (`anyhow`'s `{:#}` and `Debug`, `tracing`'s error
/// fields) says each thing once. `Display` writes the service's own error (through the
/// layers this crate adds: a [`Starting`](Self::Starting), a [`GaveUp`](Self::GaveUp), a
/// nested container's `Failed`, a list of one failure), so `source()` is *that* error's
/// source: for a service that returned `DbError("connect failed")` caused by an
/// `io::Error`, the error is `db: connect failed` and its source the `io::Error`. A list of
/// several failures has none (its text names each). To reach the service's own error,
/// downcast with [`source_as`](Self::source_as).
///
/// Because it implements [`Drop`], a field cannot be moved out of it by a pattern
/// (`let ServiceError::Failed { source, .. } = err` does not compile): borrow
/// ([`source_as`](Self::source_as), [`failures`](Self::failures)), or take the owned parts
/// with [`into_source`](Self::into_source) and [`into_failures`](Self::into_failures).
///
/// # Examples
///
/// ```
/// use taskgroup::service::{service_fn, ServiceGroup, ServiceError};
/// use tokio_util::sync::CancellationToken;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut group = ServiceGroup::builder("app")
///     .service(service_fn("db", |_ctx, _ready| async { Err("connection refused".into()) }))
///     .build()
///     .unwrap();
/// let err = group.serve(CancellationToken::new()).await.unwrap_err();
/// assert_eq!(err.to_string(), "db: connection refused");
/// assert!(matches!(&err.failures()[0], ServiceError::Failed { name, .. } if name == "db"));
/// # }
/// ```
#[non_exhaustive]
pub enum ServiceError {
    /// The service returned an error.
    ///
    /// `source` is the service's own error, by value, so it can be downcast
    /// ([`source_as`](ServiceError::source_as)). It is deliberately *not* the core's shared
    /// [`TaskError`](crate::TaskError): the core lends a task's error only as `&dyn Error`,
    /// so holding its record would take the owned, downcastable error away from every
    /// caller, and a service error needs no second copy of the task's id and group (its
    /// `name` and the container's path say where it came from). Panics, which carry no
    /// value, come from the core's records. Nothing here formats the error: a `Display` that
    /// panics only matters to whoever prints it.
    Failed {
        /// The service's name.
        name: String,
        /// The error the service returned.
        source: BoxError,
    },
    /// The service panicked; the panic was caught and did not unwind into the caller.
    Panicked {
        /// The service's name.
        name: String,
        /// The panic message, or a placeholder when the payload was not a string.
        message: String,
    },
    /// A long-running service returned `Ok(())` before it was asked to stop.
    ExitedEarly {
        /// The service's name.
        name: String,
    },
    /// The service did not report ready within its start timeout.
    StartTimeout {
        /// The service's name.
        name: String,
        /// The start timeout that elapsed.
        timeout: Duration,
    },
    /// The service did not stop within its stop timeout after cancellation; its task was
    /// aborted. One per hung *leaf*: a service nested in containers is named by its path
    /// (`"top/nested/db"`), however deep, with where it was added and how long it ran.
    StopTimeout {
        /// The service's path: the names of the containers around it and its own, joined
        /// by `/` (a member's name holds none: [`ConfigError::InvalidName`]).
        name: String,
        /// The stop timeout that elapsed: the container's own, or, when a container around
        /// it stopped it sooner, the time its stop had, to the millisecond. Zero when its
        /// stop began as that deadline passed (a [`Sequence`](super::Sequence)'s service
        /// whose turn to stop came after it), or never began (its token was not cancelled:
        /// a container around aborted the sequence before its turn came, or a group that
        /// had not begun its stop): the text then says it had no time to stop.
        timeout: Duration,
        /// Where the service was added to its container (or, for a task the service layer
        /// did not add, where the core spawned it).
        site: &'static std::panic::Location<'static>,
        /// How long its run had been going when it was aborted.
        age: Duration,
    },
    /// `serve` (or `run`) was called on a container that is already running; nothing was
    /// started a second time.
    AlreadyRunning {
        /// The container's name.
        name: String,
    },
    /// A [`Sequence`](super::Sequence) could not start this service; the services started
    /// before it were stopped in reverse order.
    Starting {
        /// The service that failed to start.
        name: String,
        /// What went wrong (a `Failed`, `Panicked`, `ExitedEarly` or `StartTimeout` error).
        source: Box<ServiceError>,
    },
    /// A [`Restarter`](super::Restarter) reached its intensity limit and gave up.
    ///
    /// `Display`: `"flaky: gave up after 3 restarts within 10s; last failure: boom"`; with a
    /// window without end (`Duration::MAX`), `"flaky: gave up after 3 restarts; last failure:
    /// boom"`.
    GaveUp {
        /// The service's name.
        name: String,
        /// How many restarts happened inside the window.
        restarts: usize,
        /// The intensity window.
        window: Duration,
        /// The failure that would have needed one restart too many.
        last: Box<ServiceError>,
    },
    /// A second shutdown signal arrived while the service was still stopping, and it was
    /// abandoned (its future dropped, which aborts every task a group or sequence spawned).
    ///
    /// `Display` lists the signals in the order they arrived:
    /// `"app: forced stop: SIGINT then SIGTERM"`.
    Forced {
        /// The service's name.
        name: String,
        /// The signal that forced the stop (the second one).
        signal: crate::shutdown::Signal,
        /// Every signal received, in the order they arrived (the first stopped gracefully).
        signals: Vec<crate::shutdown::Signal>,
    },
    /// Every failure of a group or sequence, in the order they happened (the first failure,
    /// which started the shutdown, comes first).
    Failures {
        /// One entry per failed service.
        errors: Vec<ServiceError>,
    },
}

impl ServiceError {
    /// The name of the service this error is about, or `None` for
    /// [`Failures`](ServiceError::Failures).
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::service::ServiceError;
    ///
    /// let err = ServiceError::ExitedEarly { name: "http".into() };
    /// assert_eq!(err.name(), Some("http"));
    /// ```
    pub fn name(&self) -> Option<&str> {
        match self {
            Self::Failed { name, .. }
            | Self::Panicked { name, .. }
            | Self::ExitedEarly { name }
            | Self::StartTimeout { name, .. }
            | Self::StopTimeout { name, .. }
            | Self::Starting { name, .. }
            | Self::GaveUp { name, .. }
            | Self::Forced { name, .. }
            | Self::AlreadyRunning { name } => Some(name),
            Self::Failures { .. } => None,
        }
    }

    /// The exit code for a process that stops on this error: after a
    /// [forced](ServiceError::Forced) stop, 128 plus the forcing signal's
    /// number (130 for SIGINT, 143 for SIGTERM), as shells report a process
    /// killed by it, and as the core's
    /// [`SignalError::exit_code`](crate::shutdown::SignalError::exit_code)
    /// says; otherwise 1.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::service::ServiceError;
    /// use taskgroup::shutdown::Signal;
    ///
    /// let err = ServiceError::Forced {
    ///     name: "app".into(),
    ///     signal: Signal::Terminate,
    ///     signals: vec![Signal::Terminate, Signal::Terminate],
    /// };
    /// assert_eq!(err.exit_code(), 143);
    /// assert_eq!(ServiceError::ExitedEarly { name: "http".into() }.exit_code(), 1);
    /// ```
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Forced { signal, .. } => match signal {
                crate::shutdown::Signal::Interrupt => 130,
                crate::shutdown::Signal::Terminate => 143,
            },
            _ => 1,
        }
    }

    /// The failures this error stands for: the list of a
    /// [`Failures`](ServiceError::Failures) error, or the error itself.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::service::ServiceError;
    ///
    /// let err = ServiceError::ExitedEarly { name: "http".into() };
    /// assert_eq!(err.failures().len(), 1);
    /// ```
    pub fn failures(&self) -> &[ServiceError] {
        match self {
            Self::Failures { errors } => errors,
            other => std::slice::from_ref(other),
        }
    }

    /// Whether this error is (or, for `Starting` and `GaveUp`, was caused by) a caught panic.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::service::ServiceError;
    ///
    /// let err = ServiceError::Panicked { name: "x".into(), message: "boom".into() };
    /// assert!(err.is_panic());
    /// ```
    pub fn is_panic(&self) -> bool {
        let mut error = self;
        loop {
            match error {
                Self::Panicked { .. } => return true,
                Self::Starting { source, .. } => error = source,
                Self::GaveUp { last, .. } => error = last,
                _ => return false,
            }
        }
    }

    /// The error the service returned, as an `E`, if it is one: the source of a
    /// [`Failed`](ServiceError::Failed) error, also through the layers this crate adds (a
    /// [`Starting`](Self::Starting), a [`GaveUp`](Self::GaveUp)'s last failure, a nested
    /// container's `Failed`, a [`Failures`](Self::Failures) list of one), each `Failed`
    /// source on the way tried first. Walked with a loop, not recursion.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io;
    /// use taskgroup::service::ServiceError;
    ///
    /// let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
    /// let failed = ServiceError::Failed { name: "db".into(), source: Box::new(refused) };
    /// let err = ServiceError::Starting { name: "db".into(), source: Box::new(failed) };
    /// let io = err.source_as::<io::Error>().unwrap();
    /// assert_eq!(io.kind(), io::ErrorKind::ConnectionRefused);
    /// assert!(err.source_as::<std::fmt::Error>().is_none());
    /// ```
    pub fn source_as<E: std::error::Error + 'static>(&self) -> Option<&E> {
        let mut error = self;
        loop {
            if let Self::Failed { source, .. } = error {
                if let Some(found) = source.downcast_ref::<E>() {
                    return Some(found);
                }
            }
            match error.layer() {
                Layer::Within(inner) => error = inner,
                Layer::Returned(_) | Layer::End => return None,
            }
        }
    }

    /// The error the service returned, which `Display` writes, reached through the layers
    /// this crate adds (those of [`source_as`](Self::source_as)); `None` for an error that
    /// is the crate's own (a panic, a timeout, a list of several).
    fn own_error(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        let mut error = self;
        loop {
            match error.layer() {
                Layer::Within(inner) => error = inner,
                Layer::Returned(own) => return Some(own),
                Layer::End => return None,
            }
        }
    }

    /// One step of the walk through the layers this crate adds around the error a service
    /// returned, which [`source_as`](Self::source_as) and `source()` take.
    fn layer(&self) -> Layer<'_> {
        match self {
            Self::Failed { source, .. } => match source.downcast_ref::<ServiceError>() {
                Some(inner) => Layer::Within(inner),
                None => Layer::Returned(&**source),
            },
            Self::Starting { source, .. } => Layer::Within(source),
            Self::GaveUp { last, .. } => Layer::Within(last),
            Self::Failures { errors } if errors.len() == 1 => Layer::Within(&errors[0]),
            _ => Layer::End,
        }
    }

    /// The source of a [`Failed`](ServiceError::Failed) error, owned (to downcast it by
    /// value), or `None` for any other variant.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io;
    /// use taskgroup::service::ServiceError;
    ///
    /// let err = ServiceError::Failed {
    ///     name: "db".into(),
    ///     source: Box::new(io::Error::from(io::ErrorKind::ConnectionRefused)),
    /// };
    /// let io: Box<io::Error> = err.into_source().unwrap().downcast().unwrap();
    /// assert_eq!(io.kind(), io::ErrorKind::ConnectionRefused);
    /// ```
    pub fn into_source(mut self) -> Option<BoxError> {
        match &mut self {
            Self::Failed { source, .. } => Some(std::mem::replace(source, Box::new(Cancelled))),
            _ => None,
        }
    }

    /// The failures this error stands for, owned: the list of a
    /// [`Failures`](ServiceError::Failures) error, or the error itself.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::service::ServiceError;
    ///
    /// let err = ServiceError::Failures {
    ///     errors: vec![ServiceError::ExitedEarly { name: "http".into() }],
    /// };
    /// let failures = err.into_failures();
    /// assert_eq!(failures[0].name(), Some("http"));
    /// ```
    pub fn into_failures(mut self) -> Vec<ServiceError> {
        match &mut self {
            Self::Failures { errors } => std::mem::take(errors),
            _ => vec![self],
        }
    }

    /// Every [`StopTimeout`](ServiceError::StopTimeout) in this error, at any depth: in
    /// lists, and in the errors of nested containers (a member's `Failed` source that is a
    /// `ServiceError`). Walked with an explicit stack.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::service::ServiceError;
    ///
    /// let err = ServiceError::ExitedEarly { name: "http".into() };
    /// assert!(err.stop_timeouts().is_empty());
    /// ```
    pub fn stop_timeouts(&self) -> Vec<&ServiceError> {
        let mut found = Vec::new();
        let mut stack = vec![self];
        while let Some(e) = stack.pop() {
            match e {
                Self::StopTimeout { .. } => found.push(e),
                Self::Failures { errors } => stack.extend(errors.iter().rev()),
                Self::Failed { source, .. } => {
                    if let Some(inner) = source.downcast_ref::<ServiceError>() {
                        stack.push(inner);
                    }
                }
                Self::Starting { source, .. } => stack.push(source),
                Self::GaveUp { last, .. } => stack.push(last),
                _ => {}
            }
        }
        found
    }

    /// The error's text without the leading `"name: "`.
    pub(crate) fn reason(&self) -> String {
        Bare(self).to_string()
    }

    /// Writes this error's text, or with `bare` its [`reason`](Self::reason), with an explicit
    /// stack instead of recursion: an error is a tree users build (containers nested in
    /// containers), so its depth is theirs, not the thread stack's.
    fn write_text(&self, f: &mut fmt::Formatter<'_>, bare: bool) -> fmt::Result {
        /// What is left to write, last first.
        enum Piece<'a> {
            /// An error's text; with `bare`, without its leading `"name: "`; `nested`
            /// below another error (a list of several there is bracketed).
            Error {
                error: &'a ServiceError,
                bare: bool,
                nested: bool,
            },
            /// The `"; "` between two errors of a list, or the `"]"` closing one.
            Text(&'static str),
        }
        let mut stack = vec![Piece::Error {
            error: self,
            bare,
            nested: false,
        }];
        while let Some(piece) = stack.pop() {
            let (error, bare, nested) = match piece {
                Piece::Error {
                    error,
                    bare,
                    nested,
                } => (error, bare, nested),
                Piece::Text(text) => {
                    f.write_str(text)?;
                    continue;
                }
            };
            // A `Starting` error's text starts with "starting name: ", not "name: ".
            let named = !bare && !matches!(error, Self::Starting { .. });
            if let (true, Some(name)) = (named, error.name()) {
                write!(f, "{name}: ")?;
            }
            let within = |error, bare| Piece::Error {
                error,
                bare,
                nested: true,
            };
            match error {
                Self::Failed { source, .. } => match source.downcast_ref::<ServiceError>() {
                    Some(inner) => stack.push(within(inner, false)),
                    None => write!(f, "{}", TrimmedEnd(source))?,
                },
                Self::Panicked { message, .. } => {
                    write!(f, "panicked: {}", message.trim_end_matches(['\n', '\r']))?
                }
                Self::ExitedEarly { .. } => {
                    f.write_str("exited early (returned Ok before it was stopped)")?
                }
                Self::StartTimeout { timeout, .. } => write!(f, "not ready within {timeout:?}")?,
                Self::StopTimeout {
                    timeout, site, age, ..
                } if timeout.is_zero() => write!(
                    f,
                    "had no time to stop (its stop began at a deadline around it), aborted \
                     (added at {site}, ran {age:?})"
                )?,
                Self::StopTimeout {
                    timeout, site, age, ..
                } => write!(
                    f,
                    "did not stop within {timeout:?}, aborted (added at {site}, ran {age:?})"
                )?,
                Self::AlreadyRunning { .. } => f.write_str("already running")?,
                Self::Starting { name, source } => {
                    write!(f, "starting {name}: ")?;
                    stack.push(within(source, true));
                }
                Self::GaveUp {
                    restarts,
                    window,
                    last,
                    ..
                } => {
                    let plural = if *restarts == 1 { "" } else { "s" };
                    write!(
                        f,
                        "gave up after {restarts} restart{plural}{}; last failure: ",
                        Within(*window)
                    )?;
                    stack.push(within(last, true));
                }
                Self::Forced { signals, .. } => {
                    write!(f, "forced stop: {}", DisplaySignals(signals))?
                }
                Self::Failures { errors } => {
                    // Below a container's name, a list of several is bracketed, so that
                    // its items after the first do not read as the container's siblings.
                    let bracketed = nested && errors.len() > 1;
                    if bracketed {
                        f.write_str("[")?;
                        stack.push(Piece::Text("]"));
                    }
                    for (i, error) in errors.iter().enumerate().rev() {
                        stack.push(within(error, false));
                        if i > 0 {
                            stack.push(Piece::Text("; "));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// This error's variant name and fields, in declaration order, for `Debug`.
    fn debug_fields(&self) -> (&'static str, Vec<(&'static str, Field<'_>)>) {
        use Field::{Error, List, Value};
        match self {
            Self::Failed { name, source } => {
                let source = match source.downcast_ref::<ServiceError>() {
                    Some(inner) => Error(inner),
                    None => Value(source),
                };
                ("Failed", vec![("name", Value(name)), ("source", source)])
            }
            Self::Panicked { name, message } => (
                "Panicked",
                vec![("name", Value(name)), ("message", Value(message))],
            ),
            Self::ExitedEarly { name } => ("ExitedEarly", vec![("name", Value(name))]),
            Self::StartTimeout { name, timeout } => (
                "StartTimeout",
                vec![("name", Value(name)), ("timeout", Value(timeout))],
            ),
            Self::StopTimeout {
                name,
                timeout,
                site,
                age,
            } => (
                "StopTimeout",
                vec![
                    ("name", Value(name)),
                    ("timeout", Value(timeout)),
                    ("site", Value(site)),
                    ("age", Value(age)),
                ],
            ),
            Self::AlreadyRunning { name } => ("AlreadyRunning", vec![("name", Value(name))]),
            Self::Starting { name, source } => (
                "Starting",
                vec![("name", Value(name)), ("source", Error(source))],
            ),
            Self::GaveUp {
                name,
                restarts,
                window,
                last,
            } => (
                "GaveUp",
                vec![
                    ("name", Value(name)),
                    ("restarts", Value(restarts)),
                    ("window", Value(window)),
                    ("last", Error(last)),
                ],
            ),
            Self::Forced {
                name,
                signal,
                signals,
            } => (
                "Forced",
                vec![
                    ("name", Value(name)),
                    ("signal", Value(signal)),
                    ("signals", Value(signals)),
                ],
            ),
            Self::Failures { errors } => ("Failures", vec![("errors", List(errors))]),
        }
    }

    /// Attributes an error returned by the service `name` to it. An error that already is a
    /// [`ServiceError`] about `name` (e.g. from a restarter) is kept as it is, so names are not
    /// repeated.
    pub(crate) fn attribute(name: &str, error: BoxError) -> Self {
        match error.downcast::<ServiceError>() {
            Ok(own) if own.name() == Some(name) => *own,
            Ok(other) => Self::Failed {
                name: name.to_owned(),
                source: other,
            },
            Err(source) => Self::Failed {
                name: name.to_owned(),
                source,
            },
        }
    }
}

/// An error taken out of a [`ServiceError`] being dropped, for [`Drop`]'s loop to drop.
enum Detached {
    /// A nested service error (a `Box<ServiceError>` field's value, or a list's item).
    Service(ServiceError),
    /// A `Failed` error's source, or a field of a [`TeardownError`] met as one.
    Boxed(BoxError),
}

impl Detached {
    /// Moves the errors nested in this one onto `stack` ([`ServiceError::detach_nested`]);
    /// a boxed error that is neither a [`ServiceError`] nor a [`TeardownError`] is left whole.
    fn detach_into(&mut self, stack: &mut Vec<Detached>) {
        match self {
            Self::Service(error) => error.detach_nested(stack),
            Self::Boxed(boxed) => {
                if let Some(error) = boxed.downcast_mut::<ServiceError>() {
                    error.detach_nested(stack);
                } else if let Some(teardown) = boxed.downcast_mut::<TeardownError>() {
                    let fields = [Some(&mut teardown.teardown), teardown.run.as_mut()];
                    for field in fields.into_iter().flatten() {
                        detach_boxed(field, stack);
                    }
                }
            }
        }
    }
}

impl ServiceError {
    /// Moves the errors nested in this one onto `stack`, leaving it shallow: dropping it then
    /// drops no service error. A `Box<ServiceError>` field keeps its box with an empty list
    /// in it; a boxed source is taken only if errors can be nested in it ([`detach_boxed`]).
    fn detach_nested(&mut self, stack: &mut Vec<Detached>) {
        match self {
            Self::Failed { source, .. } => detach_boxed(source, stack),
            Self::Starting { source: inner, .. } | Self::GaveUp { last: inner, .. } => {
                let empty = Self::Failures { errors: Vec::new() };
                stack.push(Detached::Service(std::mem::replace(&mut **inner, empty)));
            }
            Self::Failures { errors } => {
                stack.extend(std::mem::take(errors).into_iter().map(Detached::Service));
            }
            Self::Panicked { .. }
            | Self::ExitedEarly { .. }
            | Self::StartTimeout { .. }
            | Self::StopTimeout { .. }
            | Self::AlreadyRunning { .. }
            | Self::Forced { .. } => {}
        }
    }
}

/// Moves `error` onto `stack` if errors can be nested in it (a [`ServiceError`] or a
/// [`TeardownError`]), leaving a [`Cancelled`] in its place (zero-sized: its box allocates
/// nothing); any other error stays, to be dropped where it is.
fn detach_boxed(error: &mut BoxError, stack: &mut Vec<Detached>) {
    if error.is::<ServiceError>() || error.is::<TeardownError>() {
        stack.push(Detached::Boxed(std::mem::replace(
            error,
            Box::new(Cancelled),
        )));
    }
}

/// Drops the errors nested in this one with a loop, not recursion (Rust's drop glue through
/// the boxed sources takes a stack frame per level): an error is a tree users build
/// (containers nested in containers), so its depth is theirs, not the thread stack's.
///
/// Each error taken off the loop's stack is shallow by the time it is dropped, so the `drop`
/// it runs finds nothing to detach: two frames deep at most, at any depth. An error without
/// nested service errors (a `Failed` with the service's own error, the common case)
/// allocates nothing here.
impl Drop for ServiceError {
    fn drop(&mut self) {
        let mut stack = Vec::new();
        self.detach_nested(&mut stack);
        while let Some(mut error) = stack.pop() {
            error.detach_into(&mut stack);
        }
    }
}

/// `" within 10s"`, or nothing for a window without end (`Duration::MAX`, which would print
/// as 584 billion years, or anything of thirty years or more: see
/// [`Intensity`](crate::service::Intensity)).
struct Within(Duration);

impl fmt::Display for Within {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if crate::shutdown::is_unlimited(self.0) {
            Ok(())
        } else {
            write!(f, " within {:?}", self.0)
        }
    }
}

struct DisplaySignals<'a>(&'a [crate::shutdown::Signal]);

impl fmt::Display for DisplaySignals<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" then ")?;
            }
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

/// An error's text without its leading `"name: "`: [`ServiceError::reason`].
struct Bare<'a>(&'a ServiceError);

impl fmt::Display for Bare<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.write_text(f, true)
    }
}

/// `"name: error"`; a nested container's error as a path (`"outer: inner: error"`), a list
/// as its items joined by `"; "`. Written without recursion, at any depth.
impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_text(f, false)
    }
}

impl std::error::Error for ServiceError {
    /// What `Display` did not write: the source of the error the service returned (see
    /// [`ServiceError`]'s `# Sources`).
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.own_error()?.source()
    }
}

/// Where [`ServiceError::layer`] leads.
enum Layer<'a> {
    /// An error of the crate's around another (a `Starting`, a `GaveUp`, a nested
    /// container's `Failed`, a list of one), which `Display` writes.
    Within(&'a ServiceError),
    /// The error the service returned.
    Returned(&'a (dyn std::error::Error + Send + Sync + 'static)),
    /// An error of the crate's own (a panic, a timeout, a list of several): nothing below.
    End,
}

/// A field's value, for `Debug`.
enum Field<'a> {
    /// Written with its own `Debug`.
    Value(&'a dyn fmt::Debug),
    /// A nested error, expanded by the same loop.
    Error(&'a ServiceError),
    /// A list of errors, expanded by the same loop.
    List(&'a [ServiceError]),
}

/// What `derive(Debug)` would write (`{:?}` and `{:#?}` alike), but with an explicit stack
/// instead of recursion, so that an error nested any number of containers deep prints.
impl fmt::Debug for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        /// What is left to write, last first.
        enum Piece<'a> {
            Text(&'static str),
            Value(&'a dyn fmt::Debug),
            Error(&'a ServiceError),
            /// Lines from here on are indented one level more (`{:#?}`)...
            Indent,
            /// ... or one level less.
            Dedent,
        }
        let pretty = f.alternate();
        let mut out = Indented {
            f,
            level: 0,
            on_newline: false,
        };
        let mut stack = vec![Piece::Error(self)];
        let mut pieces = Vec::new();
        while let Some(piece) = stack.pop() {
            let error = match piece {
                Piece::Text(text) => {
                    out.write_str(text)?;
                    continue;
                }
                Piece::Value(value) if pretty => {
                    write!(out, "{value:#?}")?;
                    continue;
                }
                Piece::Value(value) => {
                    write!(out, "{value:?}")?;
                    continue;
                }
                Piece::Indent => {
                    out.level += 1;
                    continue;
                }
                Piece::Dedent => {
                    out.level -= 1;
                    continue;
                }
                Piece::Error(error) => error,
            };
            // This error's pieces, in order, then onto the stack reversed.
            let (variant, fields) = error.debug_fields();
            pieces.push(Piece::Text(variant));
            pieces.push(Piece::Text(if pretty { " {\n" } else { " { " }));
            pieces.extend(pretty.then_some(Piece::Indent));
            for (i, (key, value)) in fields.into_iter().enumerate() {
                if i > 0 && !pretty {
                    pieces.push(Piece::Text(", "));
                }
                pieces.push(Piece::Text(key));
                pieces.push(Piece::Text(": "));
                match value {
                    Field::Value(value) => pieces.push(Piece::Value(value)),
                    Field::Error(inner) => pieces.push(Piece::Error(inner)),
                    Field::List([]) => pieces.push(Piece::Text("[]")),
                    Field::List(errors) => {
                        pieces.push(Piece::Text(if pretty { "[\n" } else { "[" }));
                        pieces.extend(pretty.then_some(Piece::Indent));
                        for (i, error) in errors.iter().enumerate() {
                            if i > 0 && !pretty {
                                pieces.push(Piece::Text(", "));
                            }
                            pieces.push(Piece::Error(error));
                            pieces.extend(pretty.then_some(Piece::Text(",\n")));
                        }
                        pieces.extend(pretty.then_some(Piece::Dedent));
                        pieces.push(Piece::Text("]"));
                    }
                }
                pieces.extend(pretty.then_some(Piece::Text(",\n")));
            }
            pieces.extend(pretty.then_some(Piece::Dedent));
            pieces.push(Piece::Text(if pretty { "}" } else { " }" }));
            stack.extend(pieces.drain(..).rev());
        }
        Ok(())
    }
}

/// Writes to a formatter with each line indented four spaces per `level`, as the standard
/// library's `{:#?}` indents a nested value.
struct Indented<'a, 'b> {
    f: &'a mut fmt::Formatter<'b>,
    level: usize,
    on_newline: bool,
}

impl fmt::Write for Indented<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for line in s.split_inclusive('\n') {
            if self.on_newline {
                for _ in 0..self.level {
                    self.f.write_str("    ")?;
                }
            }
            self.on_newline = line.ends_with('\n');
            self.f.write_str(line)?;
        }
        Ok(())
    }
}

/// A setting of a group, sequence, restarter or backoff is invalid.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use taskgroup::service::{Backoff, ConfigError};
///
/// let err = Backoff::exponential(Duration::from_secs(2), Duration::from_secs(1), 2.0, 0.0)
///     .unwrap_err();
/// assert!(matches!(err, ConfigError::BackoffMinAboveMax { .. }));
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A supervisor was built without any service. No longer returned: an empty
    /// supervisor, like an empty group, is valid and returns at once.
    #[error("{group}: no services")]
    NoServices {
        /// The supervisor's name.
        group: String,
    },
    /// Two services of one group, sequence or supervisor have the same name.
    #[error("{group}: duplicate service name {name:?}")]
    DuplicateName {
        /// The group's name.
        group: String,
        /// The repeated name.
        name: String,
    },
    /// A service's name is empty or holds a `/`: inside a container, a service is named by
    /// its path, the names of the containers around it and its own joined by `/`
    /// (`"top/api/db"`), in reports, errors and status; such a name would make two services
    /// one path (`"top"`'s `"a/b"` and `"top/a"`'s `"b"`), or a path that names no one.
    #[error("{group}: service name {name:?} is empty or holds a '/', which separates the names in a service's path")]
    InvalidName {
        /// The group's name.
        group: String,
        /// The name given.
        name: String,
    },
    /// A duration setting is zero.
    #[error("{setting} must be greater than zero")]
    ZeroDuration {
        /// Which setting.
        setting: &'static str,
    },
    /// The backoff's minimum delay is larger than its maximum.
    #[error("backoff min {min:?} is greater than max {max:?}")]
    BackoffMinAboveMax {
        /// The minimum delay.
        min: Duration,
        /// The maximum delay.
        max: Duration,
    },
    /// The backoff factor is not a finite number of at least 1.
    #[error("backoff factor {factor} must be finite and at least 1")]
    InvalidFactor {
        /// The factor given.
        factor: f64,
    },
    /// The jitter is not within `0.0..=1.0`.
    #[error("jitter {jitter} must be within 0.0..=1.0")]
    InvalidJitter {
        /// The jitter given.
        jitter: f64,
    },
}

/// An error a service returns to say "I stopped because I was cancelled".
///
/// Groups, sequences and restarters treat it like `Ok(())`: a cancellation-caused error is not
/// reported as a failure. Any *other* error a service returns, even after it was cancelled (a
/// failing teardown, say), is reported, so no error is silently dropped.
///
/// # Examples
///
/// ```
/// use taskgroup::service::{service_fn, Cancelled, ServiceGroup};
/// use tokio_util::sync::CancellationToken;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let svc = service_fn("worker", |ctx: CancellationToken, _ready| async move {
///     ctx.cancelled().await;
///     Err(Cancelled.into())
/// });
/// let mut group = ServiceGroup::builder("app").service(svc).build().unwrap();
/// let ctx = CancellationToken::new();
/// ctx.cancel();
/// assert!(group.serve(ctx).await.is_ok());
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, thiserror::Error)]
#[error("cancelled")]
pub struct Cancelled;

/// The error of a [`run_teardown`](super::run_teardown) service whose teardown failed.
///
/// The run's own error is never lost: if the run failed too, it is kept in `run`.
///
/// `Display` writes both errors, so [`source`](std::error::Error::source) is what it did not
/// write, as for [`ServiceError`]: the teardown error's own source. The cause of the run's
/// error, if any, is reached through `run`.
///
/// # Examples
///
/// ```
/// use taskgroup::service::TeardownError;
///
/// let err = TeardownError { teardown: "flush failed".into(), run: Some("socket closed".into()) };
/// assert_eq!(err.to_string(), "teardown failed: flush failed; run failed too: socket closed");
/// ```
#[derive(Debug)]
pub struct TeardownError {
    /// The teardown's error.
    pub teardown: BoxError,
    /// The run's error, if the run failed as well.
    pub run: Option<BoxError>,
}

impl fmt::Display for TeardownError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "teardown failed: {}", self.teardown)?;
        if let Some(run) = &self.run {
            write!(f, "; run failed too: {run}")?;
        }
        Ok(())
    }
}

impl std::error::Error for TeardownError {
    /// The teardown error's source: `Display` wrote the teardown error itself.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.teardown.source()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Display`, `{:?}` and `{:#?}` write what they wrote when `Debug` was derived and
    /// `Display` came from `thiserror` (the texts below are that code's output), with a
    /// multi-line value, an empty list and a foreign source among them.
    #[test]
    fn errors_print_as_before_the_explicit_stack() {
        let error = ServiceError::Failures {
            errors: vec![
                ServiceError::Failed {
                    name: "outer".into(),
                    source: Box::new(ServiceError::Starting {
                        name: "db".into(),
                        source: Box::new(ServiceError::GaveUp {
                            name: "db".into(),
                            restarts: 2,
                            window: Duration::from_secs(1),
                            last: Box::new(ServiceError::Panicked {
                                name: "db".into(),
                                message: "boom\nline two".into(),
                            }),
                        }),
                    }),
                },
                ServiceError::Failed {
                    name: "cache".into(),
                    source: "refused".into(),
                },
                ServiceError::Failures { errors: vec![] },
                ServiceError::StartTimeout {
                    name: "http".into(),
                    timeout: Duration::from_millis(1500),
                },
            ],
        };
        assert_eq!(
            error.to_string(),
            "outer: starting db: gave up after 2 restarts within 1s; last failure: panicked: \
             boom\nline two; cache: refused; ; http: not ready within 1.5s"
        );
        assert_eq!(
            format!("{error:?}"),
            "Failures { errors: [Failed { name: \"outer\", source: Starting { name: \"db\", \
             source: GaveUp { name: \"db\", restarts: 2, window: 1s, last: Panicked { name: \
             \"db\", message: \"boom\\nline two\" } } } }, Failed { name: \"cache\", source: \
             \"refused\" }, Failures { errors: [] }, StartTimeout { name: \"http\", timeout: \
             1.5s }] }"
        );
        let pretty = r#"Failures {
    errors: [
        Failed {
            name: "outer",
            source: Starting {
                name: "db",
                source: GaveUp {
                    name: "db",
                    restarts: 2,
                    window: 1s,
                    last: Panicked {
                        name: "db",
                        message: "boom\nline two",
                    },
                },
            },
        },
        Failed {
            name: "cache",
            source: "refused",
        },
        Failures {
            errors: [],
        },
        StartTimeout {
            name: "http",
            timeout: 1.5s,
        },
    ],
}"#;
        assert_eq!(format!("{error:#?}"), pretty);
        let ServiceError::Failures { errors } = &error else {
            unreachable!()
        };
        assert_eq!(
            errors[0].reason(),
            "starting db: gave up after 2 restarts within 1s; last failure: panicked: boom\nline \
             two"
        );
        assert_eq!(errors[3].reason(), "not ready within 1.5s");
        // `source()` is what the text did not say: a panic and a string have no source.
        use std::error::Error as _;
        assert!(errors.iter().all(|error| error.source().is_none()));
    }

    /// An error with its source chain, as `anyhow`'s `{:#}` writes it.
    fn chain(error: &dyn std::error::Error) -> String {
        let mut text = error.to_string();
        let mut next = error.source();
        while let Some(cause) = next {
            write!(text, ": {cause}").unwrap();
            next = cause.source();
        }
        text
    }

    /// A service's error with a cause of its own (`DbError` caused by an `io::Error`).
    #[derive(Debug)]
    struct DbError(std::io::Error);

    impl fmt::Display for DbError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("connect failed")
        }
    }

    impl std::error::Error for DbError {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    fn db_failed() -> ServiceError {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        ServiceError::Failed {
            name: "db".into(),
            source: Box::new(DbError(refused)),
        }
    }

    /// Each layer of an error and its sources is written once: the sources are what
    /// `Display` did not write, the service's own error's cause, through the layers the
    /// crate adds; the service's own error is reached by `source_as`. The `{:#}` of a
    /// sequence's start failure said `starting db: connect failed: db: connect failed:
    /// connect failed: refused`.
    /// A nested container's list of several failures is bracketed: its items after the
    /// first were written as the top list's (`inner: a: x; b: y`), reading as failures of
    /// siblings of `inner`.
    #[test]
    fn a_nested_list_of_several_is_bracketed() {
        let failed = |name: &str, source: ServiceError| ServiceError::Failed {
            name: name.into(),
            source: Box::new(source),
        };
        let leaf = |name: &str, text: &str| ServiceError::Failed {
            name: name.into(),
            source: text.into(),
        };
        let list = |errors: Vec<ServiceError>| ServiceError::Failures { errors };
        let panicked = ServiceError::Panicked {
            name: "b".into(),
            message: "boom".into(),
        };
        let error = list(vec![
            failed(
                "outer",
                failed(
                    "inner",
                    list(vec![leaf("a", "x"), panicked, leaf("c", "z")]),
                ),
            ),
            leaf("d", "w"),
        ]);
        assert_eq!(
            error.to_string(),
            "outer: inner: [a: x; b: panicked: boom; c: z]; d: w"
        );
        let starting = ServiceError::Starting {
            name: "db".into(),
            source: Box::new(failed("db", list(vec![leaf("a", "x"), leaf("b", "y")]))),
        };
        assert_eq!(starting.to_string(), "starting db: [a: x; b: y]");
        let gave_up = ServiceError::GaveUp {
            name: "r".into(),
            restarts: 1,
            window: Duration::from_secs(1),
            last: Box::new(failed("r", list(vec![leaf("a", "x"), leaf("b", "y")]))),
        };
        assert_eq!(
            gave_up.to_string(),
            "r: gave up after 1 restart within 1s; last failure: [a: x; b: y]"
        );
        // A text that ends a line keeps what follows it on its line.
        let ends_a_line = list(vec![
            leaf("a", "x\r\n"),
            ServiceError::Panicked {
                name: "b".into(),
                message: "boom\n".into(),
            },
            leaf("c", "z"),
        ]);
        assert_eq!(ends_a_line.to_string(), "a: x; b: panicked: boom; c: z");
    }

    #[test]
    fn a_chain_says_each_thing_once() {
        let nested = |error: ServiceError| ServiceError::Failed {
            name: "outer".into(),
            source: Box::new(error),
        };
        let gave_up = |error: ServiceError| ServiceError::GaveUp {
            name: "db".into(),
            restarts: 3,
            window: Duration::from_secs(10),
            last: Box::new(error),
        };
        let starting = |error: ServiceError| ServiceError::Starting {
            name: "db".into(),
            source: Box::new(error),
        };
        let one = |error: ServiceError| ServiceError::Failures {
            errors: vec![error],
        };
        let cases = [
            (db_failed(), "db: connect failed: refused"),
            (
                starting(db_failed()),
                "starting db: connect failed: refused",
            ),
            (
                gave_up(db_failed()),
                "db: gave up after 3 restarts within 10s; last failure: connect failed: refused",
            ),
            (
                one(nested(one(starting(db_failed())))),
                "outer: starting db: connect failed: refused",
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(chain(&error), expected);
            let db = error
                .source_as::<DbError>()
                .expect("the service's own error");
            assert_eq!(db.0.kind(), std::io::ErrorKind::ConnectionRefused);
        }
        // A teardown's error writes the teardown's error (and the run's): its source is the
        // teardown error's own. It was the teardown error, written twice.
        let teardown = ServiceError::Failed {
            name: "td".into(),
            source: Box::new(TeardownError {
                teardown: Box::new(DbError(std::io::Error::other("refused"))),
                run: Some("socket closed".into()),
            }),
        };
        assert_eq!(
            chain(&teardown),
            "td: teardown failed: connect failed; run failed too: socket closed: refused"
        );
        // A list of two names both, and has no single source.
        let two = ServiceError::Failures {
            errors: vec![db_failed(), db_failed()],
        };
        assert_eq!(chain(&two), "db: connect failed; db: connect failed");
        assert!(two.source_as::<DbError>().is_none());
    }

    /// Counts its drops: a leaf's error in the drop tests.
    #[derive(Debug)]
    struct Counted(std::sync::Arc<std::sync::atomic::AtomicUsize>);

    impl fmt::Display for Counted {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("counted")
        }
    }

    impl std::error::Error for Counted {}

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Dropping an error drops every error nested in it once, through every kind of nesting
    /// (a list, `Starting`, `GaveUp`, a `Failed` source that is a service error, a teardown's
    /// two errors), foreign leaves included; tests/depth.rs drops one 500,000 levels deep.
    #[test]
    fn dropping_an_error_drops_everything_nested_in_it_once() {
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = || -> BoxError { Box::new(Counted(dropped.clone())) };
        let leaf = |source| ServiceError::Failed {
            name: "leaf".into(),
            source,
        };
        let mut error = leaf(counted());
        for _ in 0..3 {
            error = ServiceError::Failures {
                errors: vec![error, leaf(counted())],
            };
            error = ServiceError::Failed {
                name: "t".into(),
                source: Box::new(TeardownError {
                    teardown: Box::new(leaf(counted())),
                    run: Some(Box::new(error)),
                }),
            };
            error = ServiceError::GaveUp {
                name: "r".into(),
                restarts: 1,
                window: Duration::MAX,
                last: Box::new(error),
            };
            error = ServiceError::Starting {
                name: "s".into(),
                source: Box::new(error),
            };
            error = ServiceError::Failed {
                name: "outer".into(),
                source: Box::new(error),
            };
        }
        let text = error.to_string();
        assert_eq!(text.matches("counted").count(), 7);
        assert_eq!(dropped.load(std::sync::atomic::Ordering::Relaxed), 0);
        drop(error);
        assert_eq!(dropped.load(std::sync::atomic::Ordering::Relaxed), 7);
    }

    /// The owned accessors hand out what a pattern can no longer move out, and drop the rest.
    #[test]
    fn owned_parts_come_out_whole() {
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let failed = ServiceError::Failed {
            name: "db".into(),
            source: Box::new(Counted(dropped.clone())),
        };
        let source = failed.into_source().expect("a Failed error's source");
        assert_eq!(dropped.load(std::sync::atomic::Ordering::Relaxed), 0);
        let counted = source.downcast::<Counted>().expect("the source given");
        drop(counted);
        assert_eq!(dropped.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert!(ServiceError::ExitedEarly { name: "x".into() }
            .into_source()
            .is_none());

        let list = ServiceError::Failures {
            errors: vec![
                ServiceError::ExitedEarly { name: "a".into() },
                ServiceError::AlreadyRunning { name: "b".into() },
            ],
        };
        let names: Vec<_> = list
            .into_failures()
            .iter()
            .map(|e| e.name().map(str::to_owned))
            .collect();
        assert_eq!(names, [Some("a".to_owned()), Some("b".to_owned())]);
        let one = ServiceError::ExitedEarly { name: "c".into() }.into_failures();
        assert!(matches!(&one[..], [ServiceError::ExitedEarly { name }] if name == "c"));
    }

    /// Every variant without nesting, in both `Debug` forms, as `derive(Debug)` writes them.
    #[test]
    fn flat_variants_debug_as_derived() {
        let site = std::panic::Location::caller();
        let cases = [
            (
                ServiceError::ExitedEarly { name: "a".into() },
                "ExitedEarly { name: \"a\" }".to_owned(),
            ),
            (
                ServiceError::AlreadyRunning { name: "a".into() },
                "AlreadyRunning { name: \"a\" }".to_owned(),
            ),
            (
                ServiceError::StopTimeout {
                    name: "a/b".into(),
                    timeout: Duration::from_secs(2),
                    site,
                    age: Duration::from_millis(3),
                },
                format!("StopTimeout {{ name: \"a/b\", timeout: 2s, site: {site:?}, age: 3ms }}"),
            ),
            (
                ServiceError::Forced {
                    name: "app".into(),
                    signal: crate::shutdown::Signal::Terminate,
                    signals: vec![
                        crate::shutdown::Signal::Interrupt,
                        crate::shutdown::Signal::Terminate,
                    ],
                },
                "Forced { name: \"app\", signal: Terminate, signals: [Interrupt, Terminate] }"
                    .to_owned(),
            ),
        ];
        for (error, debug) in cases {
            assert_eq!(format!("{error:?}"), debug);
            assert!(format!("{error:#?}").starts_with(&format!(
                "{} {{\n    name: ",
                debug.split(' ').next().unwrap()
            )));
        }
    }
}
