import TPMWire

/// A kernel measurement as people and programs read it (`vmv introspect kernel --json`):
/// addresses as 0x-prefixed hex strings, since JSON numbers lose precision above 2^53.
public struct KernelReport: Sendable, Codable, Hashable {
    public struct PhysicalRun: Sendable, Codable, Hashable {
        public var virtualStart: String
        public var physicalStart: String
        public var size: Int
        public var largestPage: Int
    }

    public struct Region: Sendable, Codable, Hashable {
        public var name: KernelRegion.Name
        public var virtualStart: String
        public var virtualEnd: String
        public var pageCount: Int
        public var physicalRuns: [PhysicalRun]
        /// The exact symbol range, when symbols were given.
        public var symbolStart: String?
        public var symbolEnd: String?
        public var measurement: RegionMeasurement
    }

    public struct Symbols: Sendable, Codable, Hashable {
        public var origin: String
        public var buildID: String?
    }

    public var domain: DomainIdentity
    public var frameSpace: FrameSpace
    public var release: String
    public var banner: String
    public var bannerAddress: String
    /// Signed hex ("0x31e00000", "-0x…").
    public var slide: String
    public var physicalSlide: String
    public var pagingLevels: Int
    public var vcpu: Int?
    public var cr3: String
    public var pageTableRoot: String
    public var viaKPTIKernelRoot: Bool
    public var symbols: Symbols?
    public var regions: [Region]

    public init(_ m: KernelMeasurement, frameSpace: FrameSpace, includePages: Bool) {
        let k = m.kernel
        domain = m.domain
        self.frameSpace = frameSpace
        release = k.banner.release
        banner = k.banner.text
        bannerAddress = Self.hex(k.bannerAddress)
        slide = Self.signedHex(k.slide)
        physicalSlide = Self.signedHex(k.physicalSlide)
        pagingLevels = k.mode.levels
        vcpu = k.vcpu
        cr3 = Self.hex(k.root.cr3)
        pageTableRoot = Self.hex(k.root.tableAddress)
        viaKPTIKernelRoot = k.viaKPTIKernelRoot
        symbols = k.symbols.map { Symbols(origin: $0.origin, buildID: $0.buildID) }
        regions = zip(k.regions, m.regions).map { region, measured in
            Region(name: region.name, virtualStart: Self.hex(region.virtualStart), virtualEnd: Self.hex(region.virtualEnd),
                   pageCount: region.pageCount,
                   physicalRuns: region.runs.map {
                       PhysicalRun(virtualStart: Self.hex($0.virtualStart), physicalStart: Self.hex($0.physicalStart),
                                   size: Int($0.size), largestPage: Int($0.largestPage))
                   },
                   symbolStart: region.symbolRange.map { Self.hex($0.lowerBound) },
                   symbolEnd: region.symbolRange.map { Self.hex($0.upperBound) },
                   measurement: includePages ? measured : measured.withoutPages)
        }
    }

    public static func hex(_ v: UInt64) -> String { "0x" + String(v, radix: 16) }
    public static func signedHex(_ v: Int64) -> String {
        v < 0 ? "-0x" + String(v.magnitude, radix: 16) : "0x" + String(v, radix: 16)
    }
}
