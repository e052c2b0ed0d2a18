//! The worker operations of Nix 2.8 (`WorkerOp` in worker-protocol.hh):
//! their numbers, names, and the error nix-daemon gives for a number it
//! does not know.

macro_rules! ops {
    ($($name:ident = $n:literal,)*) => {
        /// A worker operation, numbered as on the wire.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Op {
            $($name = $n,)*
        }

        impl Op {
            /// Every operation Nix 2.8 knows, in number order.
            pub const ALL: &'static [Op] = &[$(Op::$name,)*];

            /// The operation numbered `n`, if Nix 2.8 has one.
            pub fn from_u64(n: u64) -> Option<Op> {
                match n {
                    $($n => Some(Op::$name),)*
                    _ => None,
                }
            }

            /// Nix's name without the `wop` prefix (`IsValidPath`).
            pub fn name(self) -> &'static str {
                match self {
                    $(Op::$name => stringify!($name),)*
                }
            }
        }
    };
}

ops! {
    IsValidPath = 1,
    HasSubstitutes = 3,
    QueryPathHash = 4,
    QueryReferences = 5,
    QueryReferrers = 6,
    AddToStore = 7,
    AddTextToStore = 8,
    BuildPaths = 9,
    EnsurePath = 10,
    AddTempRoot = 11,
    AddIndirectRoot = 12,
    SyncWithGC = 13,
    FindRoots = 14,
    ExportPath = 16,
    QueryDeriver = 18,
    SetOptions = 19,
    CollectGarbage = 20,
    QuerySubstitutablePathInfo = 21,
    QueryDerivationOutputs = 22,
    QueryAllValidPaths = 23,
    QueryFailedPaths = 24,
    ClearFailedPaths = 25,
    QueryPathInfo = 26,
    ImportPaths = 27,
    QueryDerivationOutputNames = 28,
    QueryPathFromHashPart = 29,
    QuerySubstitutablePathInfos = 30,
    QueryValidPaths = 31,
    QuerySubstitutablePaths = 32,
    QueryValidDerivers = 33,
    OptimiseStore = 34,
    VerifyStore = 35,
    BuildDerivation = 36,
    AddSignatures = 37,
    NarFromPath = 38,
    AddToStoreNar = 39,
    QueryMissing = 40,
    QueryDerivationOutputMap = 41,
    RegisterDrvOutput = 42,
    QueryRealisation = 43,
    AddMultipleToStore = 44,
    AddBuildLog = 45,
    BuildPathsWithResults = 46,
}

impl Op {
    pub fn number(self) -> u64 {
        self as u64
    }

    /// Operations nix-daemon 2.8 itself no longer answers: its `performOp`
    /// has no case for them and answers [`invalid_operation`].
    pub fn is_removed_in_2_8(self) -> bool {
        matches!(self, Op::QueryFailedPaths | Op::ClearFailedPaths)
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.number())
    }
}

/// The message nix-daemon 2.8 sends for an operation number it does not
/// handle (`throw Error("invalid operation %1%", op)`); the daemon then
/// closes the connection, since the request's arguments cannot be skipped.
/// The number is highlighted as Nix's `hintfmt` does.
pub fn invalid_operation(n: u64) -> String {
    format!("invalid operation {}", crate::stderr::hint_arg(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip_and_gaps_are_unknown() {
        for &op in Op::ALL {
            assert_eq!(Op::from_u64(op.number()), Some(op));
        }
        assert_eq!(Op::ALL.len(), 43);
        for n in [0, 2, 15, 17, 47, u64::MAX] {
            assert_eq!(Op::from_u64(n), None);
        }
        assert_eq!(Op::BuildPathsWithResults.name(), "BuildPathsWithResults");
        assert_eq!(
            invalid_operation(99),
            "invalid operation \x1b[35;1m99\x1b[0m"
        );
    }
}
