/// The JSON form of a record, shared by `vmv log show --json`, `vmv log export --format json`
/// and `vmv-verifier log check --json`. Field names are the binary format's; digests are
/// `{"alg": "sha256", "digest": "hex"}`; 64-bit addresses are hex strings (JSON numbers
/// lose precision above 2^53); absent fields are left out.
extension VMVEventRecord: Encodable {
    enum Key: String, CodingKey {
        case seq, epoch, pcr, time, kind, domain, subject, contentDigest, region, attributes, epochStart
        case uuid, id, name
        case virtualStart, physicalStart, pageSize, pageCount, merkleRoot
        case resetCount, restartCount, reason, previousEpoch, previousEnd, startPCRs
        case alg, digest
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        try c.encode(seq, forKey: .seq)
        try c.encode(epoch, forKey: .epoch)
        try c.encode(pcr, forKey: .pcr)
        try c.encode(time, forKey: .time)
        try c.encode(kind.name, forKey: .kind)
        if let domain {
            var d = c.nestedContainer(keyedBy: Key.self, forKey: .domain)
            try d.encode(domain.uuidString, forKey: .uuid)
            try d.encodeIfPresent(domain.id, forKey: .id)
            try d.encodeIfPresent(domain.name, forKey: .name)
        }
        try c.encodeIfPresent(subject, forKey: .subject)
        if let contentDigest { try Self.encode(contentDigest, &c, .contentDigest) }
        if let region {
            var g = c.nestedContainer(keyedBy: Key.self, forKey: .region)
            try g.encode(Self.hex(region.virtualStart), forKey: .virtualStart)
            try g.encodeIfPresent(region.physicalStart.map(Self.hex), forKey: .physicalStart)
            try g.encode(region.pageSize, forKey: .pageSize)
            try g.encode(region.pageCount, forKey: .pageCount)
            try Self.encode(region.merkleRoot, &g, .merkleRoot)
        }
        if !attributes.isEmpty {
            var a = c.nestedContainer(keyedBy: AttributeKey.self, forKey: .attributes)
            for attribute in attributes { try a.encode(attribute.value, forKey: AttributeKey(attribute.key)) }
        }
        if let e = epochStart {
            var s = c.nestedContainer(keyedBy: Key.self, forKey: .epochStart)
            try s.encode(e.resetCount, forKey: .resetCount)
            try s.encode(e.restartCount, forKey: .restartCount)
            try s.encode(e.reason, forKey: .reason)
            try s.encodeIfPresent(e.previousEpoch, forKey: .previousEpoch)
            try s.encodeIfPresent(e.previousEnd.map { "\($0)" }, forKey: .previousEnd)
            if !e.startPCRs.isEmpty {
                var p = s.nestedContainer(keyedBy: AttributeKey.self, forKey: .startPCRs)
                for d in e.startPCRs { try p.encode(Hex.encode(d.bytes), forKey: AttributeKey(d.algorithm.name)) }
            }
        }
    }

    private static func encode(_ d: TCGDigest, _ c: inout KeyedEncodingContainer<Key>, _ key: Key) throws {
        var n = c.nestedContainer(keyedBy: Key.self, forKey: key)
        try n.encode(d.algorithm.name, forKey: .alg)
        try n.encode(Hex.encode(d.bytes), forKey: .digest)
    }

    static func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }

    struct AttributeKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(_ s: String) { stringValue = s }
        init?(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }
}
