//! The coverage matrix of one experiment as the store has it: the read model's
//! [`CoverageMatrix`] (named phases × kinds of fault, with `start` and `exited` shown, its
//! percentage and gaps), filled from `kind_coverage`, and the faults whose first step never
//! fired, from `coverage_counts`. The terminal summary of `atropos run` builds the same
//! matrix from the same definition.

use serde::Serialize;
use sqlx::sqlite::SqliteConnection;

use crate::report::model::{CellCounts, Counts, CoverageCell, CoverageMatrix, FaultKind};

/// The coverage of an experiment, and what never fired.
#[derive(Debug, Clone, Serialize)]
pub struct Matrix {
    /// Phases × kinds, its percentage and gaps.
    #[serde(flatten)]
    pub coverage: CoverageMatrix,
    /// Faults with trials whose first step never fired, with those trials' verdicts.
    pub not_injected: Vec<NotInjected>,
}

/// A fault's trials whose first step never fired.
#[derive(Debug, Clone, Serialize)]
pub struct NotInjected {
    /// The fault.
    pub fault: String,
    /// Those trials by verdict.
    pub counts: Counts,
}

impl Matrix {
    /// Covered required cells in whole percent; `None` without required cells.
    pub fn percent(&self) -> Option<u64> {
        self.coverage.percent()
    }

    /// The cell of `phase` × `kind`.
    pub fn cell(&self, phase: &str, kind: FaultKind) -> Option<&CoverageCell> {
        self.coverage.cell(phase, kind)
    }

    /// Whether any trial's first step never fired.
    pub fn has_not_injected(&self) -> bool {
        !self.not_injected.is_empty()
    }
}

/// The kinds stored for a version (`NULL` before kinds were recorded: none).
pub(crate) fn kinds_of(json: Option<&str>) -> Vec<FaultKind> {
    json.map(super::json_list)
        .unwrap_or_default()
        .iter()
        .filter_map(|k| FaultKind::from_key(k))
        .collect()
}

/// The matrix of experiment `id` (all versions, or one) over the axes of a version with
/// these `phases`, `faults` and `kinds`.
pub(crate) async fn matrix(
    conn: &mut SqliteConnection,
    id: i64,
    version: Option<i64>,
    phases: &[String],
    faults: &[String],
    kinds: &[FaultKind],
) -> anyhow::Result<Matrix> {
    Ok(Matrix {
        coverage: coverage(conn, id, version, phases, kinds).await?,
        not_injected: not_injected(conn, id, version, faults).await?,
    })
}

/// The coverage of experiment `id` (all versions, or one) over `phases` × `kinds`.
pub(crate) async fn coverage(
    conn: &mut SqliteConnection,
    id: i64,
    version: Option<i64>,
    phases: &[String],
    kinds: &[FaultKind],
) -> anyhow::Result<CoverageMatrix> {
    let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT kc.phase, kc.kind, kc.verdict, sum(kc.trials)
         FROM experiment_versions v JOIN kind_coverage kc ON kc.version_id = v.id
         WHERE v.experiment_id = ?1 AND (?2 IS NULL OR v.id = ?2)
         GROUP BY kc.phase, kc.kind, kc.verdict",
    )
    .bind(id)
    .bind(version)
    .fetch_all(&mut *conn)
    .await?;
    let mut counts = CellCounts::new();
    for (phase, kind, verdict, n) in rows {
        if let Some(kind) = FaultKind::from_key(&kind) {
            counts.entry((phase, kind)).or_default().add(&verdict, n);
        }
    }
    Ok(CoverageMatrix::build(phases, kinds, &counts))
}

/// Per fault of `faults`, its trials whose first step never fired.
async fn not_injected(
    conn: &mut SqliteConnection,
    id: i64,
    version: Option<i64>,
    faults: &[String],
) -> anyhow::Result<Vec<NotInjected>> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT cc.fault, cc.verdict, sum(cc.trials)
         FROM experiment_versions v JOIN coverage_counts cc ON cc.version_id = v.id
         WHERE v.experiment_id = ?1 AND (?2 IS NULL OR v.id = ?2) AND cc.phase = ''
         GROUP BY cc.fault, cc.verdict",
    )
    .bind(id)
    .bind(version)
    .fetch_all(&mut *conn)
    .await?;
    let mut not_injected: Vec<NotInjected> = Vec::new();
    for (fault, verdict, n) in rows {
        if !faults.contains(&fault) {
            continue;
        }
        match not_injected.iter_mut().find(|f| f.fault == fault) {
            Some(f) => f.counts.add(&verdict, n),
            None => {
                let mut counts = Counts::default();
                counts.add(&verdict, n);
                not_injected.push(NotInjected { fault, counts });
            }
        }
    }
    not_injected.sort_by_key(|f| faults.iter().position(|x| *x == f.fault));
    Ok(not_injected)
}
