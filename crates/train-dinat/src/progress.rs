//! A compact progress display for burn-train: one `indicatif` bar per epoch and split (hidden
//! when stdout is not a terminal), then one summary line per epoch and split (always printed).
//!
//! burn-train's own terminal UI (its `tui` feature, ratatui) is not enabled by this crate; its
//! fallback renderer prints a debug line per batch, so the example installs this one instead.

use std::collections::HashMap;

use burn::train::metric::{MetricDefinition, MetricId, NumericEntry};
use burn::train::renderer::{
    EvaluationName, EvaluationProgress, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining, ProgressType, TrainingProgress,
};
use indicatif::{ProgressBar, ProgressStyle};

/// Running means of the numeric metrics of the current epoch and split.
#[derive(Default)]
struct Running {
    sums: Vec<(String, f64, usize)>,
}

impl Running {
    fn add(&mut self, name: &str, value: f64) {
        match self.sums.iter_mut().find(|(n, _, _)| n == name) {
            Some((_, sum, count)) => {
                *sum += value;
                *count += 1;
            }
            None => self.sums.push((name.to_string(), value, 1)),
        }
    }

    fn line(&self) -> String {
        self.sums
            .iter()
            .map(|(name, sum, count)| format!("{name} {:.3}", sum / *count as f64))
            .collect::<Vec<_>>()
            .join("  ")
    }
}

/// The renderer handed to `SupervisedTraining::renderer`.
pub struct BarRenderer {
    names: HashMap<MetricId, String>,
    bar: Option<(String, usize, ProgressBar)>,
    running: Running,
}

impl BarRenderer {
    /// A renderer with no bar yet.
    pub fn new() -> Self {
        Self {
            names: HashMap::new(),
            bar: None,
            running: Running::default(),
        }
    }

    fn record(&mut self, state: MetricState) {
        if let MetricState::Numeric(entry, value) = state {
            let value = match value {
                NumericEntry::Value(v) => v,
                NumericEntry::Aggregated {
                    aggregated_value, ..
                } => aggregated_value,
            };
            if let Some(name) = self.names.get(&entry.metric_id) {
                let name = name.clone();
                self.running.add(&name, value);
            }
        }
    }

    /// Finishes the current bar and prints its epoch's summary line.
    fn finish(&mut self) {
        if let Some((split, epoch, bar)) = self.bar.take() {
            bar.finish_and_clear();
            println!("epoch {epoch} {split:<5} {}", self.running.line());
        }
        self.running = Running::default();
    }

    fn render(&mut self, split: &str, item: &TrainingProgress) {
        let epoch = item.global_progress.items_processed;
        let same = matches!(&self.bar, Some((s, e, _)) if s == split && *e == epoch);
        if !same {
            self.finish();
            let bar = ProgressBar::new(0).with_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            let total = item.global_progress.items_total;
            bar.set_prefix(format!("epoch {epoch}/{total} {split:<5}"));
            self.bar = Some((split.to_string(), epoch, bar));
        }
        if let (Some((_, _, bar)), Some(progress)) = (&self.bar, &item.progress) {
            bar.set_length(progress.items_total as u64);
            bar.set_position(progress.items_processed as u64);
            bar.set_message(self.running.line());
        }
    }
}

impl MetricsRendererTraining for BarRenderer {
    fn update_train(&mut self, state: MetricState) {
        self.record(state);
    }

    fn update_valid(&mut self, state: MetricState) {
        self.record(state);
    }

    fn render_train(&mut self, item: TrainingProgress, _: Vec<ProgressType>) {
        self.render("train", &item);
    }

    fn render_valid(&mut self, item: TrainingProgress, _: Vec<ProgressType>) {
        self.render("valid", &item);
    }
}

impl MetricsRendererEvaluation for BarRenderer {
    fn update_test(&mut self, _: EvaluationName, state: MetricState) {
        self.record(state);
    }

    fn render_test(&mut self, item: EvaluationProgress, _: Vec<ProgressType>) {
        self.render("test", &TrainingProgress::from(&item));
    }
}

impl MetricsRenderer for BarRenderer {
    fn manual_close(&mut self) {
        self.finish();
    }

    fn register_metric(&mut self, definition: MetricDefinition) {
        self.names.insert(definition.metric_id, definition.name);
    }
}
