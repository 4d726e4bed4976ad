//! Errors of the service layer: what a service run ended with, and what a setting got wrong.

use std::fmt;
use std::time::Duration;

pub use crate::BoxError;

/// Why a service, group, sequence or restarter stopped with an error.
///
/// Every variant that is about one service carries its `name`, and its `Display` starts with
/// `"name: "`, so a [`Failures`](ServiceError::Failures) list prints as one `name: error` item
/// per failed service. A nested group's failures print as a path (`"outer: inner: error"`).
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
#[derive(Debug, thiserror::Error)]
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
    #[error("{name}: {source}")]
    Failed {
        /// The service's name.
        name: String,
        /// The error the service returned.
        source: BoxError,
    },
    /// The service panicked; the panic was caught and did not unwind into the caller.
    #[error("{name}: panicked: {message}")]
    Panicked {
        /// The service's name.
        name: String,
        /// The panic message, or a placeholder when the payload was not a string.
        message: String,
    },
    /// A long-running service returned `Ok(())` before it was asked to stop.
    #[error("{name}: exited early (returned Ok before it was stopped)")]
    ExitedEarly {
        /// The service's name.
        name: String,
    },
    /// The service did not report ready within its start timeout.
    #[error("{name}: not ready within {timeout:?}")]
    StartTimeout {
        /// The service's name.
        name: String,
        /// The start timeout that elapsed.
        timeout: Duration,
    },
    /// The service did not stop within its stop timeout after cancellation; its task was
    /// aborted. One per hung *leaf*: a service nested in containers is named by its path
    /// (`"top/nested/db"`), however deep, with where it was added and how long it ran.
    #[error("{name}: did not stop within {timeout:?}, aborted (added at {site}, ran {age:?})")]
    StopTimeout {
        /// The service's path: the names of the containers around it and its own, joined
        /// by `/`.
        name: String,
        /// The stop timeout that elapsed (the tightest of the containers around it).
        timeout: Duration,
        /// Where the service was added to its container (or, for a task the service layer
        /// did not add, where the core spawned it).
        site: &'static std::panic::Location<'static>,
        /// How long its run had been going when it was aborted.
        age: Duration,
    },
    /// `serve` (or `run`) was called on a container that is already running; nothing was
    /// started a second time.
    #[error("{name}: already running")]
    AlreadyRunning {
        /// The container's name.
        name: String,
    },
    /// A [`Sequence`](super::Sequence) could not start this service; the services started
    /// before it were stopped in reverse order.
    #[error("starting {name}: {}", .source.reason())]
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
    #[error("{name}: gave up after {restarts} restarts{}; last failure: {}", Within(*.window), .last.reason())]
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
    #[error("{name}: forced stop: {}", DisplaySignals(.signals))]
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
    #[error("{}", DisplayList(.errors))]
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
        match self {
            Self::Panicked { .. } => true,
            Self::Starting { source, .. } => source.is_panic(),
            Self::GaveUp { last, .. } => last.is_panic(),
            _ => false,
        }
    }

    /// The source of a [`Failed`](ServiceError::Failed) error as an `E`, if it is one.
    ///
    /// # Examples
    ///
    /// ```
    /// use taskgroup::service::{ServiceError, TeardownError};
    ///
    /// let err = ServiceError::Failed { name: "db".into(), source: "gone".into() };
    /// assert!(err.source_as::<TeardownError>().is_none());
    /// ```
    pub fn source_as<E: std::error::Error + 'static>(&self) -> Option<&E> {
        match self {
            Self::Failed { source, .. } => source.downcast_ref::<E>(),
            _ => None,
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
        let full = self.to_string();
        match self.name() {
            Some(name) if !matches!(self, Self::Starting { .. }) => full
                .strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(": "))
                .map(str::to_owned)
                .unwrap_or(full),
            _ => full,
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

/// `" within 10s"`, or nothing for a window without end (`Duration::MAX`, which would print
/// as 584 billion years).
struct Within(Duration);

impl fmt::Display for Within {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == Duration::MAX {
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

struct DisplayList<'a>(&'a [ServiceError]);

impl fmt::Display for DisplayList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
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
/// # Examples
///
/// ```
/// use taskgroup::service::TeardownError;
///
/// let err = TeardownError { teardown: "flush failed".into(), run: Some("socket closed".into()) };
/// assert_eq!(err.to_string(), "teardown failed: flush failed; run failed too: socket closed");
/// ```
#[derive(Debug, thiserror::Error)]
pub struct TeardownError {
    /// The teardown's error.
    #[source]
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
