//! Synthetic card transactions with the trainer's distributions (merchant mix, amounts around the
//! card's 30-day average, card-not-present and travel rates by merchant, daytime-heavy hours,
//! velocity), seeded and reproducible, with a chosen share drawn from fraud patterns (card
//! testing, account takeover).

use rand::distr::weighted::WeightedIndex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal, Poisson};
use serde_json::{Value, json};

/// (MCC, legitimate-traffic weight, card-not-present probability, amount scale)
const MCCS: [(u16, f64, f64, f64); 14] = [
    (5411, 18.0, 0.22, 1.0),
    (5812, 12.0, 0.22, 1.0),
    (5814, 10.0, 0.22, 0.3),
    (5541, 8.0, 0.22, 1.0),
    (5912, 5.0, 0.22, 1.0),
    (5311, 5.0, 0.22, 1.0),
    (4111, 4.0, 0.22, 0.15),
    (5815, 3.0, 0.98, 0.25),
    (4511, 1.5, 0.85, 5.0),
    (7011, 1.5, 0.5, 3.0),
    (5732, 2.5, 0.22, 2.5),
    (5967, 0.6, 0.95, 1.0),
    (7995, 0.6, 0.8, 1.0),
    (6051, 0.5, 0.9, 1.0),
];

const LEGIT_HOURS: [f64; 24] = [
    0.8, 0.5, 0.35, 0.25, 0.25, 0.4, 1.0, 2.5, 4.0, 5.0, 5.5, 6.0, 7.0, 6.5, 6.0, 6.0, 6.5, 7.5,
    8.0, 7.0, 5.5, 4.0, 2.5, 1.5,
];

pub struct Generator {
    rng: StdRng,
    fraud_rate: f64,
    mcc: WeightedIndex<f64>,
    hour: WeightedIndex<f64>,
    next_id: u64,
    prefix: String,
}

impl Generator {
    pub fn new(seed: u64, fraud_rate: f64, prefix: &str) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            fraud_rate,
            mcc: WeightedIndex::new(MCCS.iter().map(|m| m.1)).expect("positive weights"),
            hour: WeightedIndex::new(LEGIT_HOURS).expect("positive weights"),
            next_id: 0,
            prefix: prefix.to_owned(),
        }
    }

    /// The next transaction, and whether it was drawn from a fraud pattern.
    pub fn next(&mut self) -> (Value, bool) {
        let id = format!("{}-{}", self.prefix, self.next_id);
        self.next_id += 1;
        let card = self.rng.random_range(0..100_000u32);
        let avg30 = LogNormal::new(45f64.ln(), 0.6)
            .expect("valid")
            .sample(&mut self.rng);
        let (mcc, _, cnp_p, scale) = MCCS[self.mcc.sample(&mut self.rng)];
        let fraud = self.rng.random_bool(self.fraud_rate);
        let mut amount = avg30
            * scale
            * LogNormal::new(0.0, 0.75)
                .expect("valid")
                .sample(&mut self.rng);
        let mut card_present = !self.rng.random_bool(cnp_p);
        let mut foreign = self.rng.random_bool(0.035);
        let mut hour = self.hour.sample(&mut self.rng) as u32;
        let activity: f64 = self.rng.random_range(0.2..4.0);
        let mut tx1 = Poisson::new(0.15 * activity)
            .expect("valid")
            .sample(&mut self.rng) as u64;
        let mut tx24 = tx1
            + Poisson::new(1.6 * activity)
                .expect("valid")
                .sample(&mut self.rng) as u64;
        let mut mcc = mcc;
        let mut distance = LogNormal::new(if card_present { 6f64.ln() } else { 12f64.ln() }, 1.0)
            .expect("valid")
            .sample(&mut self.rng);
        if fraud {
            if self.rng.random_bool(0.5) {
                // Card testing: tiny card-not-present amounts in bursts.
                amount = self.rng.random_range(0.5..6.0);
                mcc = 5967;
                card_present = false;
                tx1 = 2 + Poisson::new(2.5).expect("valid").sample(&mut self.rng) as u64;
                tx24 = tx1 + Poisson::new(4.0).expect("valid").sample(&mut self.rng) as u64;
            } else {
                // Account takeover: a big ticket, far away, at night.
                amount = avg30 * self.rng.random_range(8.0..40.0);
                mcc = [5732, 5944, 6051][self.rng.random_range(0..3)];
                card_present = false;
                foreign = self.rng.random_bool(0.6);
                hour = self.rng.random_range(0..6);
            }
        }
        if foreign {
            distance += LogNormal::new(1200f64.ln(), 0.9)
                .expect("valid")
                .sample(&mut self.rng);
        }
        let tx = json!({
            "transaction_id": id,
            "card_id": format!("card-{card}"),
            "amount": (amount * 100.0).round() / 100.0,
            "currency": "EUR",
            "timestamp": format!("2026-11-26T{hour:02}:{:02}:00Z", self.rng.random_range(0..60)),
            "merchant_category": mcc,
            "card_present": card_present,
            "country": if foreign { "BR" } else { "DE" },
            "home_country": "DE",
            "distance_from_home_km": (distance * 10.0).round() / 10.0,
            "tx_count_1h": tx1,
            "tx_count_24h": tx24,
            "avg_amount_30d": (avg30 * 100.0).round() / 100.0,
        });
        (tx, fraud)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transactions_are_valid_reproducible_and_fraud_comes_at_the_chosen_rate() {
        let mut a = Generator::new(7, 0.05, "t");
        let mut b = Generator::new(7, 0.05, "t");
        let received = time::OffsetDateTime::now_utc();
        let mut frauds = 0;
        let mut hours = [0u32; 24];
        for _ in 0..20_000 {
            let (tx, fraud) = a.next();
            assert_eq!(tx, b.next().0, "same seed, same transactions");
            let valid = infergate::domain::ValidTransaction::from_json(&tx, received)
                .unwrap_or_else(|e| panic!("{tx}: {e:?}"));
            hours[valid.features.0[2] as usize] += 1;
            frauds += u32::from(fraud);
        }
        let rate = f64::from(frauds) / 20_000.0;
        assert!((0.04..0.06).contains(&rate), "fraud rate {rate}");
        assert!(hours[18] > 3 * hours[3], "daytime heavy: {hours:?}");
        assert_ne!(
            Generator::new(8, 0.05, "t").next().0,
            Generator::new(7, 0.05, "t").next().0
        );
    }
}
