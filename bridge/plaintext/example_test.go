package plaintext_test

import (
	"fmt"

	"github.com/wecom-bridge/wecom-bridge/bridge/plaintext"
)

func ExampleFromMarkdown() {
	answer := "## 部署步骤\n\n" +
		"1. **注意：**先安装 `go`，参见[文档](https://go.dev/doc)\n" +
		"2. 运行：\n\n" +
		"   ```bash\n   make run\n   ```\n\n" +
		"| 环境 | 端口 |\n|---|--:|\n| 测试 | 8080 |\n| prod | 443 |"
	fmt.Println(plaintext.FromMarkdown(answer))
	// Output:
	// 【部署步骤】
	//
	// 1. 注意：先安装 go，参见文档 (https://go.dev/doc)
	//
	// 2. 运行：
	//
	//       make run
	//
	// 环境 | 端口
	// -----------
	// 测试 | 8080
	// prod |  443
}

func ExampleToWeComMarkdown() {
	fmt.Println(plaintext.ToWeComMarkdown("### 结果\n\n**注意：**详见[报告](https://e.com/r)，*斜体*和`代码`。"))
	// Output:
	// ### 结果
	//
	// **注意：**详见[报告](https://e.com/r)，斜体和`代码`。
}
