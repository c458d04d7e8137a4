package verify

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	protorekor "github.com/sigstore/protobuf-specs/gen/pb-go/rekor/v1"
	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/fulcio/certificate"
	sgverify "github.com/sigstore/sigstore-go/pkg/verify"

	"github.com/and3rn3t/hookd/internal/deploy"
	"github.com/and3rn3t/hookd/internal/registry"
)

// Kinds of in-toto statement accepted as a signature of an image: cosign
// v3's image signature and SLSA build provenance (GitHub's
// attest-build-provenance). An SBOM or a vulnerability report says
// something about an image, not that the workflow built or vouched for it.
var acceptedPredicates = map[string]bool{
	"https://sigstore.dev/cosign/sign/v1": true,
	"https://slsa.dev/provenance/v1":      true,
	"https://slsa.dev/provenance/v0.2":    true,
}

// The cosign legacy format: the annotations of a .sig layer, and the type
// its simple-signing payload must declare.
const (
	annotationSignature   = "dev.cosignproject.cosign/signature"
	annotationCertificate = "dev.sigstore.cosign/certificate"
	annotationBundle      = "dev.sigstore.cosign/bundle"
	annotationTimestamp   = "dev.sigstore.cosign/rfc3161timestamp"
	simpleSigningType     = "cosign container image signature"
	// bundleV01 is the bundle version that takes a transparency log's
	// inclusion promise without a proof, which is what cosign kept.
	bundleV01 = "application/vnd.dev.sigstore.bundle+json;version=0.1"
)

// A verdict on one signature, ranked: the best ranked failure is the one
// worth telling a person about.
type verdict int

const (
	unreadable    verdict = iota // not a signature hookd can read
	invalid                      // does not verify against the trusted root
	otherDigest                  // signs something else
	otherKind                    // verifies, but is an attestation of another kind
	otherIdentity                // verifies, made by someone else
	verified
)

// result is what checking one signature found.
type result struct {
	verdict verdict
	source  string
	detail  string // why it failed, for people
	signed  deploy.Verification
}

// checkSignature verifies sig for digest ("sha256:…") against each
// verifier and p's identity, and returns the best result.
func checkSignature(sig registry.Signature, digest string, verifiers []*sgverify.Verifier, p policy) result {
	best := result{verdict: unreadable, source: sig.Source}
	ent, err := entityOf(sig)
	if err != nil {
		best.detail = err.Error()
		return best
	}
	if !ent.covers(digest) {
		best.verdict = otherDigest
		best.detail = "it signs other content, not " + digest
		return best
	}
	want, err := hex.DecodeString(strings.TrimPrefix(digest, "sha256:"))
	if err != nil || !strings.HasPrefix(digest, "sha256:") {
		best.detail = "digest " + digest + " is not sha256"
		return best
	}
	id, err := sgverify.NewShortCertificateIdentity(p.issuer, "", "", p.subject.String())
	if err != nil {
		best.detail = err.Error()
		return best
	}
	for _, v := range verifiers {
		artifact := sgverify.WithArtifactDigest("sha256", want)
		if ent.payload != nil {
			artifact = sgverify.WithArtifact(bytes.NewReader(ent.payload))
		}
		r := result{source: sig.Source}
		res, err := v.Verify(ent.entity, sgverify.NewPolicy(artifact, sgverify.WithCertificateIdentity(id)))
		var noMatch *sgverify.ErrNoMatchingCertificateIdentity
		switch {
		case errors.As(err, &noMatch):
			// Identities are checked last: the signature verified.
			r.verdict = otherIdentity
			r.signed = ent.signer()
			r.detail = fmt.Sprintf("signed by %s (issuer %s)", r.signed.Identity, r.signed.Issuer)
		case err != nil:
			r.verdict = invalid
			r.detail = "it does not verify: " + err.Error()
		case res.Statement != nil && !acceptedPredicates[res.Statement.GetPredicateType()]:
			r.verdict = otherKind
			r.detail = "an attestation of type " + res.Statement.GetPredicateType() + ", not a signature or build provenance"
		default:
			r.verdict = verified
			r.signed = summary(res.Signature)
		}
		if r.verdict > best.verdict {
			best = r
		}
		if best.verdict == verified {
			break
		}
	}
	return best
}

// entity is a signature made ready for sigstore-go.
type entity struct {
	entity sgverify.SignedEntity
	// payload is the signed content when it is not the image manifest
	// itself (cosign's simple-signing payload).
	payload []byte
	// covers reports, before anything is verified, whether the signature
	// claims to sign digest.
	covers func(digest string) bool
	leaf   func() deploy.Verification
}

func (e entity) signer() deploy.Verification { return e.leaf() }

// entityOf reads a bundle, or builds one from a legacy cosign layer.
func entityOf(sig registry.Signature) (entity, error) {
	switch sig.Format {
	case registry.FormatBundle:
		return bundleEntity(sig.Bundle)
	case registry.FormatCosign:
		return cosignEntity(sig.Payload, sig.Annotations)
	}
	return entity{}, fmt.Errorf("unknown signature format %q", sig.Format)
}

func bundleEntity(data []byte) (entity, error) {
	b := &bundle.Bundle{Bundle: new(protobundle.Bundle)}
	if err := b.UnmarshalJSON(data); err != nil {
		return entity{}, fmt.Errorf("unreadable Sigstore bundle: %w", err)
	}
	e := entity{entity: b, leaf: func() deploy.Verification { return leafOf(b) }}
	switch {
	case b.GetDsseEnvelope() != nil:
		env, err := b.Envelope()
		if err != nil {
			return entity{}, fmt.Errorf("unreadable Sigstore bundle: %w", err)
		}
		st, err := env.Statement()
		if err != nil {
			return entity{}, fmt.Errorf("unreadable in-toto statement: %w", err)
		}
		e.covers = func(digest string) bool {
			for _, s := range st.GetSubject() {
				if "sha256:"+strings.ToLower(s.GetDigest()["sha256"]) == digest {
					return true
				}
			}
			return false
		}
	case b.GetMessageSignature() != nil:
		md := b.GetMessageSignature().GetMessageDigest()
		e.covers = func(digest string) bool {
			return md.GetAlgorithm() == protocommon.HashAlgorithm_SHA2_256 && "sha256:"+hex.EncodeToString(md.GetDigest()) == digest
		}
	default:
		return entity{}, errors.New("unreadable Sigstore bundle: no signature in it")
	}
	return e, nil
}

// simpleSigning is the part of cosign's signed payload hookd checks.
type simpleSigning struct {
	Critical struct {
		Image struct {
			Digest string `json:"docker-manifest-digest"`
		} `json:"image"`
		Type string `json:"type"`
	} `json:"critical"`
}

// rekorBundle is cosign's dev.sigstore.cosign/bundle annotation: the
// transparency log's promise to include the entry.
type rekorBundle struct {
	SignedEntryTimestamp []byte `json:"SignedEntryTimestamp"`
	Payload              struct {
		Body           []byte `json:"body"`
		IntegratedTime int64  `json:"integratedTime"`
		LogIndex       int64  `json:"logIndex"`
		LogID          string `json:"logID"`
	} `json:"Payload"`
}

// cosignEntity builds a Sigstore bundle (version 0.1, which takes an
// inclusion promise for a proof) from a layer of cosign's legacy .sig tag,
// as sigstore-go's OCI example does; the signed content is the payload,
// whose docker-manifest-digest must name the image.
func cosignEntity(payload []byte, ann map[string]string) (entity, error) {
	var ss simpleSigning
	if err := json.Unmarshal(payload, &ss); err != nil {
		return entity{}, fmt.Errorf("unreadable cosign payload: %w", err)
	}
	if ss.Critical.Type != simpleSigningType {
		return entity{}, fmt.Errorf("cosign payload of type %q, not %q", ss.Critical.Type, simpleSigningType)
	}
	sig, err := base64.StdEncoding.DecodeString(ann[annotationSignature])
	if err != nil || len(sig) == 0 {
		return entity{}, errors.New("cosign signature without a readable signature annotation")
	}
	block, _ := pem.Decode([]byte(ann[annotationCertificate]))
	if block == nil {
		return entity{}, errors.New("cosign signature without a certificate (a key-pair signature, which hookd does not take)")
	}
	vm := &protobundle.VerificationMaterial{
		Content: &protobundle.VerificationMaterial_X509CertificateChain{X509CertificateChain: &protocommon.X509CertificateChain{
			Certificates: []*protocommon.X509Certificate{{RawBytes: block.Bytes}},
		}},
	}
	if s := ann[annotationBundle]; s != "" {
		var rb rekorBundle
		if err := json.Unmarshal([]byte(s), &rb); err != nil {
			return entity{}, fmt.Errorf("unreadable cosign transparency-log bundle: %w", err)
		}
		logID, err := hex.DecodeString(rb.Payload.LogID)
		if err != nil {
			return entity{}, fmt.Errorf("unreadable cosign transparency-log bundle: log id: %w", err)
		}
		var body struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := json.Unmarshal(rb.Payload.Body, &body); err != nil {
			return entity{}, fmt.Errorf("unreadable cosign transparency-log entry: %w", err)
		}
		vm.TlogEntries = []*protorekor.TransparencyLogEntry{{
			LogIndex:          rb.Payload.LogIndex,
			LogId:             &protocommon.LogId{KeyId: logID},
			KindVersion:       &protorekor.KindVersion{Kind: body.Kind, Version: body.APIVersion},
			IntegratedTime:    rb.Payload.IntegratedTime,
			InclusionPromise:  &protorekor.InclusionPromise{SignedEntryTimestamp: rb.SignedEntryTimestamp},
			CanonicalizedBody: rb.Payload.Body,
		}}
	}
	if s := ann[annotationTimestamp]; s != "" {
		var ts struct {
			SignedRFC3161Timestamp []byte `json:"SignedRFC3161Timestamp"`
		}
		if err := json.Unmarshal([]byte(s), &ts); err != nil {
			return entity{}, fmt.Errorf("unreadable cosign timestamp: %w", err)
		}
		vm.TimestampVerificationData = &protobundle.TimestampVerificationData{
			Rfc3161Timestamps: []*protocommon.RFC3161SignedTimestamp{{SignedTimestamp: ts.SignedRFC3161Timestamp}},
		}
	}
	digest := sha256Sum(payload)
	pb, err := bundle.NewBundle(&protobundle.Bundle{
		MediaType:            bundleV01,
		VerificationMaterial: vm,
		Content: &protobundle.Bundle_MessageSignature{MessageSignature: &protocommon.MessageSignature{
			MessageDigest: &protocommon.HashOutput{Algorithm: protocommon.HashAlgorithm_SHA2_256, Digest: digest},
			Signature:     sig,
		}},
	})
	if err != nil {
		return entity{}, fmt.Errorf("cosign signature: %w", err)
	}
	return entity{
		entity:  pb,
		payload: payload,
		covers:  func(d string) bool { return ss.Critical.Image.Digest == d },
		leaf:    func() deploy.Verification { return leafOf(pb) },
	}, nil
}

// leafOf summarises the bundle's certificate. It is only called once
// sigstore-go verified the bundle (all but the identity), so the summary
// names who really signed.
func leafOf(b *bundle.Bundle) deploy.Verification {
	vc, err := b.VerificationContent()
	if err != nil || vc.Certificate() == nil {
		return deploy.Verification{Identity: "an unknown signer"}
	}
	s, err := certificate.SummarizeCertificate(vc.Certificate())
	if err != nil {
		return deploy.Verification{Identity: "an unknown signer"}
	}
	return fromSummary(s)
}

func summary(s *sgverify.SignatureVerificationResult) deploy.Verification {
	if s == nil || s.Certificate == nil {
		return deploy.Verification{}
	}
	return fromSummary(*s.Certificate)
}

func fromSummary(s certificate.Summary) deploy.Verification {
	return deploy.Verification{
		Identity: s.SubjectAlternativeName,
		Issuer:   s.Issuer,
		Commit:   s.SourceRepositoryDigest,
		Ref:      s.SourceRepositoryRef,
	}
}
