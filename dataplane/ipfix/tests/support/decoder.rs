//! A strict IPFIX decoder for the tests: it learns templates from template sets as a collector
//! does, decodes data records with them, and refuses anything RFC 7011 does not allow (or the
//! exporter should never produce: padding, trailing bytes, unknown templates).

use std::collections::HashMap;

/// An element: its enterprise number (none for IANA) and id.
pub type Element = (Option<u32>, u16);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldSpecifier {
    pub element: Element,
    pub length: u16,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub length: u16,
    pub export_time_s: u32,
    pub sequence_number: u32,
    pub observation_domain_id: u32,
    pub sets: Vec<Set>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Set {
    Templates(Vec<u16>),
    Data {
        template_id: u16,
        records: Vec<Record>,
    },
}

/// A data record: each field's bytes (a variable-length field's without its length prefix), in
/// template order.
pub type Record = Vec<(Element, Vec<u8>)>;

impl Message {
    pub fn template_ids(&self) -> Vec<u16> {
        self.sets
            .iter()
            .flat_map(|set| match set {
                Set::Templates(ids) => ids.clone(),
                Set::Data { .. } => Vec::new(),
            })
            .collect()
    }

    pub fn records(&self) -> Vec<(u16, Record)> {
        self.sets
            .iter()
            .flat_map(|set| match set {
                Set::Templates(_) => Vec::new(),
                Set::Data {
                    template_id,
                    records,
                } => records.iter().map(|r| (*template_id, r.clone())).collect(),
            })
            .collect()
    }
}

/// The value of an element in a record.
pub fn field(record: &Record, element: Element) -> &[u8] {
    let found: Vec<_> = record.iter().filter(|(e, _)| *e == element).collect();
    assert_eq!(found.len(), 1, "element {element:?} in {record:?}");
    &found[0].1
}

#[derive(Default)]
pub struct Collector {
    templates: HashMap<u16, Vec<FieldSpecifier>>,
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], String> {
        let end = self.at + len;
        let taken = self
            .bytes
            .get(self.at..end)
            .ok_or_else(|| format!("{len} bytes wanted at {} of {}", self.at, self.bytes.len()))?;
        self.at = end;
        Ok(taken)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }
    fn u16(&mut self) -> Result<u16, String> {
        self.array().map(u16::from_be_bytes)
    }
    fn u32(&mut self) -> Result<u32, String> {
        self.array().map(u32::from_be_bytes)
    }
    fn done(&self) -> bool {
        self.at == self.bytes.len()
    }
}

impl Collector {
    pub fn decode(&mut self, bytes: &[u8]) -> Result<Message, String> {
        let mut reader = Reader { bytes, at: 0 };
        let version = reader.u16()?;
        if version != 10 {
            return Err(format!("version {version}"));
        }
        let length = reader.u16()?;
        if usize::from(length) != bytes.len() {
            return Err(format!("header length {length}, message {}", bytes.len()));
        }
        let export_time_s = reader.u32()?;
        let sequence_number = reader.u32()?;
        let observation_domain_id = reader.u32()?;
        let mut sets = Vec::new();
        while !reader.done() {
            let set_id = reader.u16()?;
            let set_length = reader.u16()?;
            if set_length < 4 {
                return Err(format!("set length {set_length}"));
            }
            let mut set = Reader {
                bytes: reader.take(usize::from(set_length) - 4)?,
                at: 0,
            };
            sets.push(match set_id {
                2 => Set::Templates(self.templates(&mut set)?),
                256.. => Set::Data {
                    template_id: set_id,
                    records: self.records(set_id, &mut set)?,
                },
                _ => return Err(format!("set id {set_id}")),
            });
        }
        Ok(Message {
            length,
            export_time_s,
            sequence_number,
            observation_domain_id,
            sets,
        })
    }

    fn templates(&mut self, set: &mut Reader) -> Result<Vec<u16>, String> {
        let mut ids = Vec::new();
        while !set.done() {
            let id = set.u16()?;
            let field_count = set.u16()?;
            let mut fields = Vec::new();
            for _ in 0..field_count {
                let raw_id = set.u16()?;
                let length = set.u16()?;
                let enterprise = match raw_id & 0x8000 {
                    0 => None,
                    _ => Some(set.u32()?),
                };
                fields.push(FieldSpecifier {
                    element: (enterprise, raw_id & 0x7fff),
                    length,
                });
            }
            self.templates.insert(id, fields);
            ids.push(id);
        }
        Ok(ids)
    }

    fn records(&self, template_id: u16, set: &mut Reader) -> Result<Vec<Record>, String> {
        let template = self
            .templates
            .get(&template_id)
            .ok_or_else(|| format!("data set for unknown template {template_id}"))?;
        let mut records = Vec::new();
        while !set.done() {
            let mut record = Vec::new();
            for field in template {
                let length = match field.length {
                    0xffff => match set.u8()? {
                        255 => usize::from(set.u16()?),
                        short => usize::from(short),
                    },
                    fixed => usize::from(fixed),
                };
                record.push((field.element, set.take(length)?.to_vec()));
            }
            records.push(record);
        }
        Ok(records)
    }
}
