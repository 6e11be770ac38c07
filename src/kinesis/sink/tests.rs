use std::sync::Arc;

use super::*;

#[test]
fn a_failed_entry_alone_of_its_key_is_sent_again_alone() {
    use aws_sdk_kinesis::types::PutRecordsResultEntry;
    let ok = PutRecordsResultEntry::builder()
        .sequence_number("1")
        .shard_id("s")
        .build();
    let throttled = PutRecordsResultEntry::builder()
        .error_code("ProvisionedThroughputExceededException")
        .error_message("slow down")
        .build();
    let sent = ["a", "b", "c"];
    let refs: Vec<&&str> = sent.iter().collect();
    let again = resend_in_key_order(refs, &[ok.clone(), throttled, ok], |e| **e);
    assert_eq!(again, [&"b"]);
}

#[test]
fn a_torn_last_line_is_dropped_on_open() {
    let path = std::env::temp_dir().join(format!("infergate-sink-{}.jsonl", std::process::id()));
    std::fs::write(&path, "{\"a\":1}\n{\"b\":2}\n{\"c\":").unwrap();
    let sink = JsonlSink::open(&path).unwrap();
    sink.write(&["{\"d\":4}".to_owned()]).unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "{\"a\":1}\n{\"b\":2}\n{\"d\":4}\n"
    );
    std::fs::write(&path, "no newline at all").unwrap();
    JsonlSink::open(&path).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
    std::fs::remove_file(&path).unwrap();
}

/// A real file on a disk the test fills: once `room` bytes are written, writes fail as on a
/// full disk (after a short write, as the OS does), until the test makes room. The test can
/// also fail the next truncations. Every call is recorded.
#[derive(Debug, Clone)]
struct FullDisk {
    file: Arc<std::fs::File>,
    room: Arc<Mutex<Option<usize>>>,
    set_len_fails: Arc<Mutex<usize>>,
    calls: Arc<Mutex<Vec<&'static str>>>,
}

impl FullDisk {
    fn open(path: &Path, room: Option<usize>) -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        Self {
            file: Arc::new(file),
            room: Arc::new(Mutex::new(room)),
            set_len_fails: Arc::default(),
            calls: Arc::default(),
        }
    }

    fn make_room(&self) {
        *self.room.lock().unwrap() = None;
    }

    fn calls(&self) -> Vec<&'static str> {
        self.calls.lock().unwrap().clone()
    }
}

impl Write for FullDisk {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.calls.lock().unwrap().push("write");
        let n = match &mut *self.room.lock().unwrap() {
            None => buf.len(),
            Some(0) => return Err(std::io::Error::from_raw_os_error(28)), // ENOSPC
            Some(room) => {
                let n = buf.len().min(*room);
                *room -= n;
                n
            }
        };
        (&*self.file).write(&buf[..n])
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SinkFile for FullDisk {
    fn file_len(&self) -> std::io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.calls.lock().unwrap().push("set_len");
        let mut fails = self.set_len_fails.lock().unwrap();
        if *fails > 0 {
            *fails -= 1;
            return Err(std::io::Error::from_raw_os_error(5)); // EIO
        }
        self.file.set_len(len)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        self.calls.lock().unwrap().push("sync");
        self.file.sync_data()
    }
}

fn temp_path(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "infergate-sink-{name}-{}.jsonl",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    path
}

fn lines(texts: &[&str]) -> Vec<String> {
    texts.iter().map(|t| (*t).to_owned()).collect()
}

#[test]
fn a_write_that_fails_halfway_leaves_whole_lines_and_its_retry_glues_no_fragment() {
    let path = temp_path("full");
    std::fs::write(&path, "{\"a\":1}\n").unwrap();
    // Room for the first line of the next page and half of its second.
    let disk = FullDisk::open(&path, Some(12));
    let sink = JsonlSink::with_file(&path, Box::new(disk.clone()));
    let page = lines(&["{\"b\":2}", "{\"c\":3}"]);
    let err = sink.write(&page).unwrap_err();
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "{\"a\":1}\n",
        "a page's lines all go, or none"
    );

    // Room again: the page (not checkpointed) is written again, by the same sink.
    disk.make_room();
    sink.write(&page).unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n"
    );
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_fragment_that_cannot_be_cut_at_once_is_cut_before_the_next_write() {
    let path = temp_path("cut");
    let disk = FullDisk::open(&path, Some(11));
    *disk.set_len_fails.lock().unwrap() = 1;
    let sink = JsonlSink::with_file(&path, Box::new(disk.clone()));
    sink.write(&lines(&["{\"a\":1}"])).unwrap();
    let page = lines(&["{\"b\":2}"]);
    assert!(sink.write(&page).is_err());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":1}\n{\"b");
    disk.make_room();
    sink.write(&page).unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "{\"a\":1}\n{\"b\":2}\n"
    );
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn written_lines_are_synced_to_the_disk_before_write_returns() {
    let path = temp_path("sync");
    let disk = FullDisk::open(&path, None);
    let sink = JsonlSink::with_file(&path, Box::new(disk.clone()));
    sink.write(&lines(&["{\"a\":1}"])).unwrap();
    assert_eq!(
        disk.calls().last(),
        Some(&"sync"),
        "the checkpoint that follows must not claim lines the disk may not hold: {:?}",
        disk.calls()
    );
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_file_cut_by_someone_else_is_not_extended() {
    let path = temp_path("rotated");
    let disk = FullDisk::open(&path, None);
    let sink = JsonlSink::with_file(&path, Box::new(disk));
    sink.write(&lines(&["{\"a\":1}", "{\"b\":2}"])).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    sink.write(&lines(&["{\"c\":3}"])).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"c\":3}\n");
    std::fs::remove_file(&path).unwrap();
}

fn put_result(error: Option<&str>) -> aws_sdk_kinesis::types::PutRecordsResultEntry {
    use aws_sdk_kinesis::types::PutRecordsResultEntry;
    match error {
        Some(code) => PutRecordsResultEntry::builder()
            .error_code(code)
            .error_message("slow down")
            .build(),
        None => PutRecordsResultEntry::builder()
            .sequence_number("1")
            .shard_id("s")
            .build(),
    }
}

fn output(key: &str, line: &str) -> OutputRecord {
    OutputRecord {
        partition_key: key.to_owned(),
        line: line.to_owned(),
    }
}

#[test]
fn the_sink_sends_again_a_failed_entry_and_every_later_one_of_its_key() {
    let throttled = Some("ProvisionedThroughputExceededException");
    let sent = [
        output("a", "a1"),
        output("b", "b1"),
        output("a", "a2"),
        output("a", "a3"),
        output("b", "b2"),
    ];
    let results = [
        put_result(throttled),
        put_result(None),
        put_result(None),
        put_result(None),
        put_result(throttled),
    ];
    let again = SinkPuts.answered(sent.iter().collect(), &results);
    let lines: Vec<&str> = again.iter().map(|r| r.line.as_str()).collect();
    assert_eq!(lines, ["a1", "a2", "a3", "b2"]);
}

#[test]
fn after_a_partial_failure_a_key_is_sent_again_in_order_from_its_first_failure() {
    let throttled = Some("ProvisionedThroughputExceededException");
    // (key, entry): a1 and b2 failed; a2 and a3 were put after a1 was not.
    let sent = vec![
        ("a", "a1"),
        ("b", "b1"),
        ("a", "a2"),
        ("a", "a3"),
        ("b", "b2"),
    ];
    let results = [
        put_result(throttled),
        put_result(None),
        put_result(None),
        put_result(None),
        put_result(throttled),
    ];
    let again = resend_in_key_order(sent, &results, |(key, _)| key);
    let again: Vec<&str> = again.into_iter().map(|(_, entry)| entry).collect();
    assert_eq!(again, ["a1", "a2", "a3", "b2"]);

    // Nothing failed: nothing again. An answer short of the call: the unanswered as failed.
    let sent = vec![("a", "a1"), ("b", "b1"), ("a", "a2")];
    assert!(
        resend_in_key_order(
            sent.clone(),
            &[put_result(None), put_result(None), put_result(None)],
            |(k, _)| k
        )
        .is_empty()
    );
    let again = resend_in_key_order(sent, &[put_result(None), put_result(None)], |(k, _)| k);
    assert_eq!(again, [("a", "a2")]);
}
