package signer_test

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/acsproxy/caddy-acs-hmac/signer"
)

func ExampleParseConnectionString() {
	cred, err := signer.ParseConnectionString(
		"endpoint=https://my-resource.communication.azure.com/;accesskey=cHctc2VjcmV0LWtleS1ieXRlcw==")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(cred.Endpoint.Host)
	fmt.Println(cred) // the key is never printed

	_, err = signer.ParseConnectionString("endpoint=https://my-resource.communication.azure.com/;accesskey=not*base64")
	fmt.Println(err) // nor echoed in errors
	// Output:
	// my-resource.communication.azure.com
	// signer.Credential{Endpoint:https://my-resource.communication.azure.com Key:REDACTED}
	// acs connection string: accesskey: acs access key: not valid base64 (10 characters)
}

func ExampleKey_Sign() {
	key, err := signer.ParseKey("pw==")
	if err != nil {
		fmt.Println(err)
		return
	}
	at := time.Date(2022, 4, 13, 18, 9, 12, 0, time.UTC)
	h := key.Sign("GET", "/testPath?testQuery=test", "example.com", signer.ContentHash(nil), at)
	fmt.Println("x-ms-date:", h.Date)
	fmt.Println("x-ms-content-sha256:", h.ContentSHA256)
	fmt.Println("Authorization:", h.Authorization)
	// Output:
	// x-ms-date: Wed, 13 Apr 2022 18:09:12 GMT
	// x-ms-content-sha256: 47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=
	// Authorization: HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature=DGdgwggJWnQyc6EHjR/Vbqg1ES64KpD6U2XwTDDj3tU=
}

func ExampleHeaders_Apply() {
	key, _ := signer.ParseKey("pw==")
	req, _ := http.NewRequest("GET", "https://example.com/testPath?testQuery=test", nil)
	req.Header.Set("Authorization", "Bearer client-token")  // replaced, not appended
	req.Header.Set("Date", "Mon, 01 Jan 2001 00:00:00 GMT") // removed
	at := time.Date(2022, 4, 13, 18, 9, 12, 0, time.UTC)
	key.Sign(req.Method, req.URL.RequestURI(), req.URL.Host, signer.ContentHash(nil), at).Apply(req.Header)
	fmt.Println(len(req.Header["Authorization"]), req.Header.Get("Date") == "")
	fmt.Println(req.Header.Get("X-Ms-Date"))
	// Output:
	// 1 true
	// Wed, 13 Apr 2022 18:09:12 GMT
}

func ExampleContentHash() {
	fmt.Println(signer.ContentHash([]byte("banana")))
	fmt.Println(signer.ContentHash(nil) == signer.EmptyContentHash)
	// Output:
	// tJPUg2Sv5E0RwBZc9HCkFk0eJgmRHvmYvoaNRq3j3k4=
	// true
}

func ExampleKey_Verify() {
	key, _ := signer.ParseKey("pw==")
	now := time.Date(2024, 6, 1, 12, 0, 0, 0, time.UTC)
	body := []byte(`{"message":"hi"}`)

	// The client side.
	hdr := http.Header{}
	key.Sign("POST", "/sms?api-version=2021-03-07", "res.communication.azure.com", signer.ContentHash(body), now).Apply(hdr)

	// The server side, from what it received.
	r := signer.Request{
		Method:       "POST",
		PathAndQuery: "/sms?api-version=2021-03-07",
		Host:         "res.communication.azure.com",
		Header:       hdr,
		ContentHash:  signer.ContentHash(body),
	}
	fmt.Println(key.Verify(r, now.Add(time.Minute), 0))

	r.PathAndQuery = "/sms?api-version=2099-01-01"
	err := key.Verify(r, now, 0)
	fmt.Println(err, errors.Is(err, signer.ErrBadSignature))

	r.PathAndQuery = "/sms?api-version=2021-03-07"
	fmt.Println(key.Verify(r, now.Add(20*time.Minute), 0))
	// Output:
	// <nil>
	// signature does not match true
	// x-ms-date is outside the allowed clock skew
}
