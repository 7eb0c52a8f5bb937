//! The values read at one scrape, as metric families that `prometheus-client` encodes.
//!
//! wrangle's counters live in its actors and atomics, read when `/metrics` is asked for, so
//! they reach `prometheus-client` as its "const" metrics through a [`Collector`] holding
//! this scrape's values (the pattern the library gives for values read at scrape time).
//! The library writes the exposition: names, `_total` on counters, label escaping,
//! cumulative histogram buckets with `+Inf`, `_sum` and `_count`.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::metrics::Histogram;

/// Every family read at one scrape, in the order they are shown.
#[derive(Debug, Default)]
pub(super) struct Snapshot {
    families: Vec<Family>,
}

/// One metric: its name, help, type, and a sample per label set.
#[derive(Debug)]
struct Family {
    /// As registered: counters without their `_total`, which the encoder adds.
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    samples: Vec<Sample>,
}

/// One label set's value (no label set: `labels` is empty).
#[derive(Debug)]
struct Sample {
    labels: Vec<(&'static str, String)>,
    value: Value,
}

#[derive(Debug)]
enum Value {
    Counter(u64),
    Gauge(u64),
    GaugeF64(f64),
    /// Observations per bucket (not cumulative; the last bound is +Inf) and their sum.
    Histogram(Vec<(f64, u64)>, f64),
}

impl Snapshot {
    /// A counter named as it is shown (`wrangle_tasks_completed_total`).
    pub(super) fn counter(&mut self, name: &'static str, help: &'static str, v: u64) {
        self.push(
            name,
            help,
            MetricType::Counter,
            vec![Sample::of(Value::Counter(v))],
        );
    }

    /// A counter with one sample per value of `label`.
    pub(super) fn counters_by<L: ToString>(
        &mut self,
        name: &'static str,
        help: &'static str,
        label: &'static str,
        rows: impl IntoIterator<Item = (L, u64)>,
    ) {
        let samples = rows
            .into_iter()
            .map(|(l, v)| Sample::by(label, l, Value::Counter(v)))
            .collect();
        self.push(name, help, MetricType::Counter, samples);
    }

    /// A whole-number gauge.
    pub(super) fn gauge(&mut self, name: &'static str, help: &'static str, v: u64) {
        self.push(
            name,
            help,
            MetricType::Gauge,
            vec![Sample::of(Value::Gauge(v))],
        );
    }

    /// A gauge that is not a whole number.
    pub(super) fn gauge_f64(&mut self, name: &'static str, help: &'static str, v: f64) {
        self.push(
            name,
            help,
            MetricType::Gauge,
            vec![Sample::of(Value::GaugeF64(v))],
        );
    }

    /// A whole-number gauge with one sample per value of `label`.
    pub(super) fn gauges_by<L: ToString>(
        &mut self,
        name: &'static str,
        help: &'static str,
        label: &'static str,
        rows: impl IntoIterator<Item = (L, u64)>,
    ) {
        let samples = rows
            .into_iter()
            .map(|(l, v)| Sample::by(label, l, Value::Gauge(v)))
            .collect();
        self.push(name, help, MetricType::Gauge, samples);
    }

    /// A gauge that is not a whole number, with one sample per value of `label`.
    pub(super) fn gauges_f64_by<L: ToString>(
        &mut self,
        name: &'static str,
        help: &'static str,
        label: &'static str,
        rows: impl IntoIterator<Item = (L, f64)>,
    ) {
        let samples = rows
            .into_iter()
            .map(|(l, v)| Sample::by(label, l, Value::GaugeF64(v)))
            .collect();
        self.push(name, help, MetricType::Gauge, samples);
    }

    /// A whole-number gauge with one sample per pair of values of labels `keys`
    /// (`{group="gpu",state="running"}`).
    pub(super) fn gauges_by2<A: ToString, B: ToString>(
        &mut self,
        name: &'static str,
        help: &'static str,
        keys: [&'static str; 2],
        rows: impl IntoIterator<Item = (A, B, u64)>,
    ) {
        let rows = rows.into_iter().map(|(a, b, v)| (a, b, Value::Gauge(v)));
        self.push(name, help, MetricType::Gauge, by2(keys, rows));
    }

    /// A counter with one sample per pair of values of labels `keys`.
    pub(super) fn counters_by2<A: ToString, B: ToString>(
        &mut self,
        name: &'static str,
        help: &'static str,
        keys: [&'static str; 2],
        rows: impl IntoIterator<Item = (A, B, u64)>,
    ) {
        let rows = rows.into_iter().map(|(a, b, v)| (a, b, Value::Counter(v)));
        self.push(name, help, MetricType::Counter, by2(keys, rows));
    }

    /// A latency histogram per pair of values of labels `keys`.
    pub(super) fn histograms_by2<A: ToString, B: ToString>(
        &mut self,
        name: &'static str,
        help: &'static str,
        keys: [&'static str; 2],
        rows: impl IntoIterator<Item = (A, B, Vec<(f64, u64)>, f64)>,
    ) {
        let rows = rows
            .into_iter()
            .map(|(a, b, counts, sum)| (a, b, Value::Histogram(counts, sum)));
        self.push(name, help, MetricType::Histogram, by2(keys, rows));
    }

    /// A latency histogram, in seconds.
    pub(super) fn histogram(&mut self, name: &'static str, help: &'static str, h: &Histogram) {
        let value = Value::Histogram(h.counts(), h.sum_secs());
        self.push(name, help, MetricType::Histogram, vec![Sample::of(value)]);
    }

    /// A latency histogram per value of `label`, each as [`Histogram::counts`] and
    /// [`Histogram::sum_secs`] read it.
    pub(super) fn histograms_by<L: ToString>(
        &mut self,
        name: &'static str,
        help: &'static str,
        label: &'static str,
        rows: impl IntoIterator<Item = (L, Vec<(f64, u64)>, f64)>,
    ) {
        let samples = rows
            .into_iter()
            .map(|(l, counts, sum)| Sample::by(label, l, Value::Histogram(counts, sum)))
            .collect();
        self.push(name, help, MetricType::Histogram, samples);
    }

    fn push(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: MetricType,
        samples: Vec<Sample>,
    ) {
        let name = match kind {
            // The encoder appends `_total` to a counter's name.
            MetricType::Counter => name.strip_suffix("_total").unwrap_or_else(|| {
                debug_assert!(false, "counter {name} does not end in _total");
                name
            }),
            _ => name,
        };
        self.families.push(Family {
            name,
            help,
            kind,
            samples,
        });
    }
}

impl Sample {
    fn of(value: Value) -> Self {
        Self {
            labels: Vec::new(),
            value,
        }
    }

    fn by(label: &'static str, value_of_label: impl ToString, value: Value) -> Self {
        Self {
            labels: vec![(label, value_of_label.to_string())],
            value,
        }
    }
}

impl Value {
    fn encode(&self, encoder: &mut MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        match self {
            Value::Counter(v) => encoder.encode_counter::<NoLabelSet, _, f64>(v, None),
            Value::Gauge(v) => encoder.encode_gauge(v),
            Value::GaugeF64(v) => encoder.encode_gauge(v),
            Value::Histogram(buckets, sum) => {
                // `_count` is the sum of the buckets read, so it always equals `+Inf`'s.
                let count = buckets.iter().map(|(_, n)| n).sum();
                encoder.encode_histogram::<NoLabelSet>(*sum, count, buckets, None)
            }
        }
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for family in &self.families {
            let mut metric =
                encoder.encode_descriptor(family.name, family.help, None, family.kind)?;
            for sample in &family.samples {
                if sample.labels.is_empty() {
                    sample.value.encode(&mut metric)?;
                } else {
                    let labels: Vec<(&str, &str)> = sample
                        .labels
                        .iter()
                        .map(|(k, v)| (*k, v.as_str()))
                        .collect();
                    sample.value.encode(&mut metric.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}

/// Samples labelled with a pair of values of labels `keys`.
fn by2<A: ToString, B: ToString>(
    keys: [&'static str; 2],
    rows: impl Iterator<Item = (A, B, Value)>,
) -> Vec<Sample> {
    rows.map(|(a, b, value)| Sample {
        labels: vec![(keys[0], a.to_string()), (keys[1], b.to_string())],
        value,
    })
    .collect()
}
