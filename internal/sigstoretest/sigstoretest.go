// Package sigstoretest signs images for tests without the internet: a
// Sigstore deployment in memory and the helpers that attach its
// signatures to images in a registry the way cosign and GitHub's
// attest-build-provenance do.
//
// The deployment is sigstore-go's VirtualSigstore (its Fulcio CA, Rekor
// log and timestamp authority; its certificates carry an e-mail identity
// and nothing else) plus a small certificate authority of this package's
// own that issues what public-good Fulcio issues to a GitHub Actions
// workflow: the workflow URI as subject, the OIDC issuer, the source
// repository, commit and ref extensions, and, when asked, an SCT from a
// certificate-transparency log of its own.
package sigstoretest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ct "github.com/google/certificate-transparency-go"
	cttls "github.com/google/certificate-transparency-go/tls"
	ctx509 "github.com/google/certificate-transparency-go/x509"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	protodsse "github.com/sigstore/protobuf-specs/gen/pb-go/dsse"
	protorekor "github.com/sigstore/protobuf-specs/gen/pb-go/rekor/v1"
	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/fulcio/certificate"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/testing/ca"
	"github.com/sigstore/sigstore-go/pkg/tlog"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	sigdsse "github.com/sigstore/sigstore/pkg/signature/dsse"
	"google.golang.org/protobuf/proto"
)

// GitHubIssuer is the OIDC issuer of GitHub Actions.
const GitHubIssuer = "https://token.actions.githubusercontent.com"

// Predicate types of the statements Bundle signs.
const (
	PredicateCosignSign = "https://sigstore.dev/cosign/sign/v1"
	PredicateProvenance = "https://slsa.dev/provenance/v1"
)

// Sigstore is a Sigstore deployment in memory. Create it with New.
type Sigstore struct {
	vs       *ca.VirtualSigstore
	caRoot   *x509.Certificate
	caInter  *x509.Certificate
	interKey *ecdsa.PrivateKey
	ctKey    *ecdsa.PrivateKey
	ctLog    *root.TransparencyLog
}

// New returns a fresh deployment. Its certificates are valid for a few
// minutes around now, like Fulcio's.
func New(t testing.TB) *Sigstore {
	t.Helper()
	vs, err := ca.NewVirtualSigstore()
	if err != nil {
		t.Fatalf("virtual sigstore: %v", err)
	}
	s := &Sigstore{vs: vs}
	now := time.Now()
	rootKey := newKey(t)
	s.caRoot = issue(t, &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "hookd test workflow CA", Organization: []string{"hookd"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true,
	}, nil, rootKey, rootKey)
	s.interKey = newKey(t)
	s.caInter = issue(t, &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "hookd test workflow CA intermediate", Organization: []string{"hookd"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
		BasicConstraintsValid: true, IsCA: true,
	}, s.caRoot, s.interKey, rootKey)
	s.ctKey = newKey(t)
	der, err := x509.MarshalPKIXPublicKey(s.ctKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	id := sha256.Sum256(der)
	s.ctLog = &root.TransparencyLog{
		BaseURL: "https://ctfe.localhost/test", ID: id[:], HashFunc: crypto.SHA256,
		PublicKey: s.ctKey.Public(), SignatureHashFunc: crypto.SHA256,
		ValidityPeriodStart: now.Add(-time.Hour), ValidityPeriodEnd: now.Add(24 * time.Hour),
	}
	return s
}

// TrustedRoot returns the deployment's trusted root: VirtualSigstore's
// certificate authority, transparency log and timestamp authority, and the
// workflow CA. With ctLog it also lists the CT log, and a verifier then
// requires SCTs, which only Workflow certificates with SCT set carry.
func (s *Sigstore) TrustedRoot(t testing.TB, ctLog bool) *root.TrustedRoot {
	t.Helper()
	cas := append(s.vs.FulcioCertificateAuthorities(), &root.FulcioCertificateAuthority{
		Root: s.caRoot, Intermediates: []*x509.Certificate{s.caInter}, URI: "https://fulcio.localhost",
		ValidityPeriodStart: s.caRoot.NotBefore, ValidityPeriodEnd: s.caRoot.NotAfter,
	})
	ctLogs := map[string]*root.TransparencyLog{}
	if ctLog {
		ctLogs[hex.EncodeToString(s.ctLog.ID)] = s.ctLog
	}
	// VirtualSigstore gives its log the hex of its id as ID, which does
	// not survive a trip through trusted_root.json: give it the id.
	rekorLogs := map[string]*root.TransparencyLog{}
	for k, l := range s.vs.RekorLogs() {
		c := *l
		id, err := hex.DecodeString(k)
		if err != nil {
			t.Fatal(err)
		}
		c.ID = id
		rekorLogs[k] = &c
	}
	tr, err := root.NewTrustedRoot(root.TrustedRootMediaType01, cas, ctLogs, s.vs.TimestampingAuthorities(), rekorLogs)
	if err != nil {
		t.Fatalf("trusted root: %v", err)
	}
	return tr
}

// WriteTrustedRoot writes TrustedRoot(ctLog) as trusted_root.json in a
// temporary directory and returns its path.
func (s *Sigstore) WriteTrustedRoot(t testing.TB, ctLog bool) string {
	t.Helper()
	data, err := s.TrustedRoot(t, ctLog).MarshalJSON()
	if err != nil {
		t.Fatalf("marshal trusted root: %v", err)
	}
	p := filepath.Join(t.TempDir(), "trusted_root.json")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Workflow is a GitHub Actions workflow run as Fulcio certifies it.
type Workflow struct {
	Repo   string // "owner/repo"
	File   string // default ".github/workflows/build.yml"
	Ref    string // default "refs/heads/main"
	Commit string // default a fixed 40-hex commit
	Issuer string // default GitHubIssuer
	// SCT embeds a signed certificate timestamp from the test CT log.
	SCT bool
}

// DefaultCommit is the commit a Workflow names unless told otherwise.
const DefaultCommit = "0123456789abcdef0123456789abcdef01234567"

func (w Workflow) withDefaults() Workflow {
	if w.File == "" {
		w.File = ".github/workflows/build.yml"
	}
	if w.Ref == "" {
		w.Ref = "refs/heads/main"
	}
	if w.Commit == "" {
		w.Commit = DefaultCommit
	}
	if w.Issuer == "" {
		w.Issuer = GitHubIssuer
	}
	return w
}

// Identity is the certificate subject Fulcio gives the workflow:
// https://github.com/OWNER/REPO/.github/workflows/FILE@REF.
func (w Workflow) Identity() string {
	w = w.withDefaults()
	return "https://github.com/" + w.Repo + "/" + w.File + "@" + w.Ref
}

// Email is a person (or service) VirtualSigstore certifies by e-mail.
type Email struct {
	Address string
	Issuer  string // default "https://accounts.example.com"
}

// Signer is a Workflow or an Email.
type Signer interface{ signer() }

func (Workflow) signer() {}
func (Email) signer()    {}

// Statement returns the in-toto statement cosign v3 signs for an image
// (or, with predicate PredicateProvenance, the one attest-build-provenance
// signs), whose subject is digest ("sha256:…").
func Statement(t testing.TB, name, digest, predicate string) []byte {
	t.Helper()
	b, err := json.Marshal(map[string]any{
		"_type":         "https://in-toto.io/Statement/v1",
		"subject":       []any{map[string]any{"name": name, "digest": map[string]string{"sha256": strings.TrimPrefix(digest, "sha256:")}}},
		"predicateType": predicate,
		"predicate":     map[string]any{},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Bundle signs statement as signer and returns the Sigstore bundle
// (v0.3, JSON) with its certificate, transparency-log entry (with an
// inclusion proof) and signed timestamp, as cosign v3 and
// attest-build-provenance store it.
func (s *Sigstore) Bundle(t testing.TB, statement []byte, signer Signer) []byte {
	t.Helper()
	var (
		leaf    *x509.Certificate
		env     *dsse.Envelope
		entries []*tlog.Entry
		stamps  [][]byte
	)
	switch sg := signer.(type) {
	case Email:
		if sg.Issuer == "" {
			sg.Issuer = "https://accounts.example.com"
		}
		// Integrated a minute from now: VirtualSigstore's leaf is valid
		// from its creation for ten minutes.
		te, err := s.vs.AttestAtTime(sg.Address, sg.Issuer, statement, time.Now().Add(time.Minute), true)
		if err != nil {
			t.Fatalf("attest: %v", err)
		}
		vc, _ := te.VerificationContent()
		leaf = vc.Certificate()
		sc, _ := te.SignatureContent()
		env = sc.(*bundle.Envelope).RawEnvelope()
		entries, _ = te.TlogEntries()
		stamps, _ = te.Timestamps()
	case Workflow:
		var key *ecdsa.PrivateKey
		leaf, key = s.workflowCert(t, sg)
		sv, err := signature.LoadECDSASignerVerifier(key, crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		es, err := dsse.NewEnvelopeSigner(&sigdsse.SignerAdapter{SignatureSigner: sv, Pub: &key.PublicKey})
		if err != nil {
			t.Fatal(err)
		}
		env, err = es.SignPayload(context.Background(), "application/vnd.in-toto+json", statement)
		if err != nil {
			t.Fatal(err)
		}
		sig, err := base64.StdEncoding.DecodeString(env.Signatures[0].Sig)
		if err != nil {
			t.Fatal(err)
		}
		e, err := s.vs.GenerateTlogEntry(leaf, env, sig, time.Now().Unix(), true)
		if err != nil {
			t.Fatalf("log entry: %v", err)
		}
		entries = []*tlog.Entry{e}
		tsr, err := s.vs.TimestampResponse(sig)
		if err != nil {
			t.Fatalf("timestamp: %v", err)
		}
		stamps = [][]byte{tsr}
	default:
		t.Fatalf("signer %T", signer)
	}
	sigs := make([]*protodsse.Signature, 0, len(env.Signatures))
	for _, sg := range env.Signatures {
		raw, err := base64.StdEncoding.DecodeString(sg.Sig)
		if err != nil {
			t.Fatal(err)
		}
		sigs = append(sigs, &protodsse.Signature{Sig: raw, Keyid: sg.KeyID})
	}
	payload, err := base64.StdEncoding.DecodeString(env.Payload)
	if err != nil {
		t.Fatal(err)
	}
	pb := &protobundle.Bundle{
		MediaType:            "application/vnd.dev.sigstore.bundle.v0.3+json",
		VerificationMaterial: s.material(t, leaf, entries, stamps),
		Content:              &protobundle.Bundle_DsseEnvelope{DsseEnvelope: &protodsse.Envelope{Payload: payload, PayloadType: env.PayloadType, Signatures: sigs}},
	}
	return marshalBundle(t, pb)
}

// Cosign signs, as cosign's legacy format does, the simple-signing payload
// naming ref ("repo:tag") and digest, as signer (an Email: the legacy
// format's transparency-log entry is a hashedrekord, which only
// VirtualSigstore's own certificates get here). It returns the payload and
// the annotations of its layer in the sha256-<hex>.sig tag.
func (s *Sigstore) Cosign(t testing.TB, ref, digest string, signer Email) (payload []byte, annotations map[string]string) {
	t.Helper()
	if signer.Issuer == "" {
		signer.Issuer = "https://accounts.example.com"
	}
	payload, err := json.Marshal(map[string]any{
		"critical": map[string]any{
			"identity": map[string]string{"docker-reference": ref},
			"image":    map[string]string{"docker-manifest-digest": digest},
			"type":     "cosign container image signature",
		},
		"optional": nil,
	})
	if err != nil {
		t.Fatal(err)
	}
	te, err := s.vs.SignAtTime(signer.Address, signer.Issuer, payload, time.Now().Add(time.Minute))
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	vc, _ := te.VerificationContent()
	certPEM, err := cryptoutils.MarshalCertificateToPEM(vc.Certificate())
	if err != nil {
		t.Fatal(err)
	}
	sc, _ := te.SignatureContent()
	entries, _ := te.TlogEntries()
	tle := s.logEntry(t, entries[0])
	rb, err := json.Marshal(map[string]any{
		"SignedEntryTimestamp": tle.GetInclusionPromise().GetSignedEntryTimestamp(),
		"Payload": map[string]any{
			"body":           tle.GetCanonicalizedBody(),
			"integratedTime": tle.GetIntegratedTime(),
			"logIndex":       tle.GetLogIndex(),
			"logID":          hex.EncodeToString(tle.GetLogId().GetKeyId()),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return payload, map[string]string{
		"dev.cosignproject.cosign/signature": base64.StdEncoding.EncodeToString(sc.Signature()),
		"dev.sigstore.cosign/certificate":    string(certPEM),
		"dev.sigstore.cosign/bundle":         string(rb),
	}
}

// Tamper returns bundle with its signed payload changed after signing,
// as an attacker rewriting the statement would.
func Tamper(t testing.TB, bundleJSON []byte) []byte {
	t.Helper()
	b := &bundle.Bundle{Bundle: new(protobundle.Bundle)}
	if err := b.UnmarshalJSON(bundleJSON); err != nil {
		t.Fatal(err)
	}
	env := b.GetDsseEnvelope()
	if env == nil {
		t.Fatal("tamper: not a DSSE bundle")
	}
	env.Payload = append(append([]byte(nil), env.Payload[:len(env.Payload)-1]...), ' ', '}')
	return marshalBundle(t, b.Bundle)
}

func (s *Sigstore) material(t testing.TB, leaf *x509.Certificate, entries []*tlog.Entry, stamps [][]byte) *protobundle.VerificationMaterial {
	vm := &protobundle.VerificationMaterial{
		Content:                   &protobundle.VerificationMaterial_Certificate{Certificate: &protocommon.X509Certificate{RawBytes: leaf.Raw}},
		TimestampVerificationData: &protobundle.TimestampVerificationData{},
	}
	for _, e := range entries {
		vm.TlogEntries = append(vm.TlogEntries, s.logEntry(t, e))
	}
	for _, ts := range stamps {
		vm.TimestampVerificationData.Rfc3161Timestamps = append(vm.TimestampVerificationData.Rfc3161Timestamps,
			&protocommon.RFC3161SignedTimestamp{SignedTimestamp: ts})
	}
	return vm
}

// logEntry is e as a bundle carries it: with its kind and the log's
// signed entry timestamp, which VirtualSigstore's entries keep beside the
// protobuf rather than in it (the timestamp is signed again here, with the
// same key, over the same payload).
func (s *Sigstore) logEntry(t testing.TB, e *tlog.Entry) *protorekor.TransparencyLogEntry {
	t.Helper()
	tle := proto.Clone(e.TransparencyLogEntry()).(*protorekor.TransparencyLogEntry)
	var body struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := json.Unmarshal(tle.GetCanonicalizedBody(), &body); err != nil {
		t.Fatal(err)
	}
	tle.KindVersion = &protorekor.KindVersion{Kind: body.Kind, Version: body.APIVersion}
	set, err := s.vs.RekorSignPayload(tlog.RekorPayload{
		Body:           e.Body(),
		IntegratedTime: tle.GetIntegratedTime(),
		LogIndex:       tle.GetLogIndex(),
		LogID:          hex.EncodeToString(tle.GetLogId().GetKeyId()),
	})
	if err != nil {
		t.Fatal(err)
	}
	tle.InclusionPromise = &protorekor.InclusionPromise{SignedEntryTimestamp: set}
	return tle
}

func marshalBundle(t testing.TB, pb *protobundle.Bundle) []byte {
	t.Helper()
	b, err := bundle.NewBundle(pb)
	if err != nil {
		t.Fatalf("bundle: %v", err)
	}
	data, err := b.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// workflowCert issues the certificate Fulcio gives w's run, for a fresh key.
func (s *Sigstore) workflowCert(t testing.TB, w Workflow) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	w = w.withDefaults()
	key := newKey(t)
	san, err := url.Parse(w.Identity())
	if err != nil {
		t.Fatal(err)
	}
	repoURI := "https://github.com/" + w.Repo
	ext := func(oid asn1.ObjectIdentifier, v string) pkix.Extension {
		der, err := asn1.MarshalWithParams(v, "utf8")
		if err != nil {
			t.Fatal(err)
		}
		return pkix.Extension{Id: oid, Value: der}
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()),
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(10 * time.Minute),
		URIs:         []*url.URL{san},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
		ExtraExtensions: []pkix.Extension{
			{Id: certificate.OIDIssuer, Value: []byte(w.Issuer)},
			ext(certificate.OIDIssuerV2, w.Issuer),
			ext(certificate.OIDBuildSignerURI, w.Identity()),
			ext(certificate.OIDRunnerEnvironment, "github-hosted"),
			ext(certificate.OIDSourceRepositoryURI, repoURI),
			ext(certificate.OIDSourceRepositoryDigest, w.Commit),
			ext(certificate.OIDSourceRepositoryRef, w.Ref),
			ext(certificate.OIDBuildConfigURI, w.Identity()),
			ext(certificate.OIDBuildTrigger, "push"),
		},
	}
	if !w.SCT {
		return issue(t, tmpl, s.caInter, key, s.interKey), key
	}
	// RFC 6962 §3.3: the log signs the certificate as it will be without
	// its SCT list. Issue it with a placeholder in the list's place, sign
	// what RemoveSCTList leaves, then issue it with the real list.
	tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkix.Extension{Id: asn1.ObjectIdentifier(ctx509.OIDExtensionCTSCT), Value: []byte{0x04, 0x00}})
	draft, err := ctx509.ParseCertificate(issue(t, tmpl, s.caInter, key, s.interKey).Raw)
	if ctx509.IsFatal(err) {
		t.Fatal(err)
	}
	issuer, err := ctx509.ParseCertificate(s.caInter.Raw)
	if err != nil {
		t.Fatal(err)
	}
	ts := uint64(now.UnixMilli())
	leaf, err := ct.MerkleTreeLeafForEmbeddedSCT([]*ctx509.Certificate{draft, issuer}, ts)
	if err != nil {
		t.Fatalf("precertificate: %v", err)
	}
	var logID ct.LogID
	copy(logID.KeyID[:], s.ctLog.ID)
	sct := ct.SignedCertificateTimestamp{SCTVersion: ct.V1, LogID: logID, Timestamp: ts}
	input, err := ct.SerializeSCTSignatureInput(sct, ct.LogEntry{Leaf: *leaf})
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(input)
	sig, err := ecdsa.SignASN1(rand.Reader, s.ctKey, h[:])
	if err != nil {
		t.Fatal(err)
	}
	sct.Signature = ct.DigitallySigned{
		Algorithm: cttls.SignatureAndHashAlgorithm{Hash: cttls.SHA256, Signature: cttls.ECDSA},
		Signature: sig,
	}
	raw, err := cttls.Marshal(sct)
	if err != nil {
		t.Fatal(err)
	}
	list, err := cttls.Marshal(ctx509.SignedCertificateTimestampList{SCTList: []ctx509.SerializedSCT{{Val: raw}}})
	if err != nil {
		t.Fatal(err)
	}
	val, err := asn1.Marshal(list)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.ExtraExtensions[len(tmpl.ExtraExtensions)-1].Value = val
	return issue(t, tmpl, s.caInter, key, s.interKey), key
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// issue signs tmpl for key's public half with parent (tmpl itself when nil).
func issue(t testing.TB, tmpl, parent *x509.Certificate, key, parentKey *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		t.Fatalf("issue certificate: %v", err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
