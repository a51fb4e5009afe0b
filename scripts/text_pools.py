"""The word pools and paragraphs scripts/make_texts.py draws from (data; each pool is split
between the calibration and the evaluation text, so the two share no names, places or paragraphs).
"""

# --- pools ---------------------------------------------------

NAMES = """Alice Bruno Chen Dalia Emeka Farah Gustav Hana Ivan Jamila Kenji Leila Mateo Nadia Oscar
Priya Quentin Rosa Samir Tara Umar Vera Wei Ximena Yusuf Zofia Amara Boris Carmen Dmitri Elif
Felix Grace Hugo Ines Jonas Kavya Luca Mina Nikolai Olga Pablo Rania Stefan Tomas Uma Viktor
Wanda Yara Zane Anika Ben Clara Diego Esme Finn Gita Henrik Isla Jakub Kira Liam Maya Noor Omar
Petra Rafael Sofia Theo Ulla Valentin Willa""".split()

PLACES = """Riverton Lakeside Millbrook Eastwood Stonebridge Ashford Greenhill Northgate Fairview
Oakdale Brightwater Redcliff Westmoor Silverlake Pinecrest Harbor-Point Maplewood Clearbrook
Windham Elmstead Foxhollow Highmoor Kingsbridge Larkfield Mossley Newhaven Orchard-Bay
Pebblecombe Queensferry Rosewood Sandhurst Thornbury Underhill Valemont Willowby Yarrow-Glen""".split()

ITEMS = """apples pencils notebooks oranges marbles stickers cookies buttons tickets stamps shells
candles lemons erasers crayons batteries postcards sandwiches muffins bottles""".split()

JOBS = """baker nurse carpenter teacher librarian pilot farmer engineer gardener chemist tailor
plumber architect painter mechanic fisher doctor musician translator programmer""".split()

CN_NAMES = """小明 小红 小刚 小丽 王芳 李强 张伟 刘洋 陈静 杨磊 赵敏 黄婷 周杰 吴霞 徐涛 孙悦 马超 朱琳
胡斌 郭芸 何平 高远 林雪 罗宁""".split()

CN_PLACES = """学校 图书馆 公园 超市 博物馆 动物园 菜市场 体育馆 书店 火车站 医院 少年宫 科技馆 游泳馆
植物园 电影院""".split()

CN_ITEMS = """苹果 铅笔 本子 橘子 气球 贴纸 饼干 鸡蛋 西瓜 故事书 彩笔 香蕉 面包 邮票""".split()

IDENTIFIERS = """items values scores prices words records samples points nodes entries rows
tokens events orders users files lines numbers readings grades""".split()

# Hand-written paragraphs (English). Split in two by position: even -> calibration, odd -> eval.
PARAGRAPHS_EN = [
    "Water moves through a cycle that has no real beginning or end. Sunlight warms lakes and "
    "oceans, and some of the water turns into vapour. As the vapour rises it cools, and tiny "
    "droplets gather around specks of dust to form clouds. When the droplets grow heavy enough "
    "they fall as rain or snow, soak into the ground, fill rivers, and eventually return to the sea.",
    "A battery stores energy in chemical form. Inside it, two different materials are separated "
    "by an electrolyte. When a wire connects the two ends, electrons flow from one material to "
    "the other through the wire, while ions move through the electrolyte to balance the charge. "
    "A rechargeable battery can push that reaction backwards when it is connected to a charger.",
    "Bread rises because yeast is alive. The yeast eats the sugars in flour and gives off carbon "
    "dioxide, and the stretchy network of gluten traps the gas in thousands of small bubbles. "
    "Kneading makes that network stronger, which is why a well-kneaded dough holds its shape. "
    "In the oven the gas expands, the yeast dies, and the starch sets into a soft crumb.",
    "Maps are always a compromise. The Earth is round, but paper is flat, so every map stretches "
    "some regions and squeezes others. A map that keeps the shapes of countries correct will "
    "distort their sizes, and one that keeps areas correct will bend their outlines. Sailors "
    "preferred maps on which a straight line meant a constant compass direction.",
    "Plants make their own food from light, water and air. In their leaves, a green pigment "
    "called chlorophyll captures energy from sunlight and uses it to join carbon dioxide and "
    "water into sugar. Oxygen is released as a by-product. Almost every animal depends on this "
    "process, either by eating plants or by eating animals that ate plants.",
    "A bicycle stays upright mostly because the rider keeps steering it under its own weight. "
    "When the bike starts to lean to one side, the rider turns the front wheel slightly in the "
    "same direction, and the bike moves back underneath. The shape of the front fork also helps: "
    "a moving bicycle tends to steer itself into a lean without any help.",
    "Libraries began as collections of clay tablets and scrolls kept by temples and kings. For "
    "most of history only a few people could read them. Public libraries, open to anyone and "
    "free to use, became common only in the last two centuries. Today a library lends not only "
    "books but also tablets, laptops, tools and quiet places to study.",
    "Sound is a wave of pressure that travels through air, water or solid materials. When a "
    "guitar string vibrates, it pushes the air around it back and forth, and the pattern of "
    "squeezed and stretched air spreads outward. Our ears turn those tiny changes in pressure "
    "into signals that the brain hears as music, speech or noise.",
    "Good passwords are long rather than clever. A sentence of four or five unrelated words is "
    "much harder to guess than a short word with a few symbols swapped in, and it is easier to "
    "remember. The most important rule, however, is never to reuse a password: when one website "
    "leaks its data, every account that shares that password is at risk.",
    "The Moon does not make its own light. We see it because it reflects sunlight, and the part "
    "we see lit changes as the Moon travels around the Earth once every month or so. When the "
    "Moon is between the Earth and the Sun we see its dark side, and call it a new moon; two weeks "
    "later it is on the far side of the Earth and shines as a full moon.",
    "Compound interest means earning interest on interest. If you save one hundred dollars at "
    "five percent a year, you have one hundred and five after the first year, and in the second "
    "year the five percent is paid on the whole one hundred and five. Over many years the "
    "difference grows surprisingly large, which is why starting early matters.",
    "Volcanoes form where melted rock from deep inside the Earth finds a way to the surface. Many "
    "of them sit along the edges of the great plates that make up the planet's crust. When "
    "pressure builds up, gas and magma burst out, and layers of ash and cooled lava slowly build "
    "the familiar cone shape over thousands of years.",
    "Learning a language as an adult is slower than as a child, but it is far from hopeless. "
    "Adults are good at noticing patterns and can use grammar explanations that children do not "
    "need. What helps most is regular practice: a little every day, plenty of listening, and "
    "speaking without being afraid of mistakes.",
    "A computer's memory is organised in layers. The processor has a few very fast registers, "
    "then small caches, then the main memory, and finally the much slower disk. Programs run "
    "quickly when the data they need next is already close to the processor, so engineers "
    "arrange data so that things used together are stored together.",
    "Honeybees communicate with a dance. A bee that has found flowers returns to the hive and "
    "walks in a figure of eight, waggling its body in the straight middle part. The direction of "
    "the waggle shows the direction of the food relative to the sun, and its length tells the "
    "other bees how far they need to fly.",
    "Small language models can run on phones and tablets because their weights are stored with "
    "fewer bits. Instead of sixteen bits for every number, a quantized model may use four or "
    "five, grouping weights in small blocks that share a scale. The model becomes several times "
    "smaller and faster, and a good quantization loses very little of its accuracy.",
    "Clocks were once set by the Sun, and every town kept its own time. When railways connected "
    "distant cities, that became a problem: timetables were impossible to read when each station "
    "used a different noon. Standard time zones were introduced so that trains, and later the "
    "whole world, could agree on what time it was.",
    "Rainbows appear when sunlight shines through raindrops. Each drop bends the light as it "
    "enters, reflects it from the back, and bends it again as it leaves. Because different "
    "colours bend by slightly different amounts, the white light is spread into a band of "
    "colours, always with red on the outside and violet on the inside.",
    "Recycling works best when materials are sorted cleanly. A single greasy pizza box can spoil "
    "a whole bale of paper, and a plastic bag can jam the machines that separate bottles from "
    "cans. Rinsing containers and following the local rules makes the difference between "
    "material that is reused and material that ends up in a landfill.",
    "The heart is a pump with four chambers. The right side receives blood from the body and "
    "sends it to the lungs, where it picks up oxygen. The left side receives that fresh blood and "
    "pushes it out to every organ. Valves between the chambers open and close in turn, which is "
    "the sound a doctor hears through a stethoscope.",
    "Erosion shapes most of the landscapes we see. Rivers carve valleys, waves wear down cliffs, "
    "wind polishes rocks in the desert, and glaciers grind mountains into sharp peaks and wide "
    "U-shaped valleys. The changes are slow, but given enough time they can turn a plateau into "
    "a canyon.",
    "A spreadsheet is a grid of cells, each holding a number, some text or a formula. The power "
    "of a spreadsheet comes from formulas that refer to other cells: change one number and every "
    "total, average and chart that depends on it updates at once. That is why people use them "
    "for budgets, grades, schedules and experiments.",
    "Snow is mostly air. Each flake is a crystal of ice with six arms, and the exact shape depends "
    "on the temperature and humidity in the cloud where it grew. Fresh snow can be ninety percent "
    "air, which is why it muffles sound and why a thick blanket of snow keeps the ground beneath "
    "it from freezing deeply.",
    "Vaccines train the immune system without the danger of the real disease. They show the body "
    "a harmless piece or a weakened form of a germ, and the immune system learns to recognise it. "
    "If the real germ arrives later, the body remembers and can fight it off quickly, often "
    "before the person feels sick at all.",
    "A good study plan spreads practice over time. Reviewing a topic for twenty minutes on four "
    "different days works better than studying it for eighty minutes the night before a test. "
    "Testing yourself, by explaining an idea without looking at your notes, is one of the most "
    "effective ways to remember it.",
    "Ships float because they push aside water. An object in water is pushed up by a force equal "
    "to the weight of the water it displaces. A steel ship is hollow and wide, so it displaces a "
    "great deal of water before it sinks very deep; a solid block of the same steel would sink "
    "straight to the bottom.",
    "Trees record their history in rings. Each year a tree adds a new layer of wood under its "
    "bark: light and wide in the growing season, darker and narrow as it slows down. Counting the "
    "rings gives the tree's age, and their widths tell scientists which years were wet and which "
    "were dry, sometimes going back thousands of years.",
    "Electric cars are simpler machines than petrol cars. An electric motor has only a few moving "
    "parts, needs no gearbox in most cars, and delivers full force from a standstill. The hard "
    "part is the battery: it is heavy, expensive and slow to refill compared with a tank of fuel.",
]

# Hand-written paragraphs (Chinese). Split the same way.
PARAGRAPHS_CN = [
    "春天来了，小河边的柳树发出了嫩绿的新芽。孩子们脱下厚厚的棉衣，在草地上放风筝、跳绳、捉迷藏。"
    "农民伯伯开始在田里播种，他们说：一年之计在于春。",
    "月亮本身不会发光，我们看到的月光其实是月球反射的太阳光。月亮绕着地球转一圈大约需要一个月，"
    "所以我们每天看到的月亮形状都不一样，有时是弯弯的月牙，有时是圆圆的满月。",
    "学习机是一种专门给学生使用的平板电脑。它里面装有课本同步的练习、单词朗读和数学讲解，"
    "还可以根据学生做错的题目推荐新的练习。很多家长希望它能帮助孩子养成自学的习惯。",
    "水在零摄氏度时会结成冰，在一百摄氏度时会沸腾变成水蒸气。冰、水和水蒸气其实是同一种物质，"
    "只是温度不同，分子排列的方式也不同。冬天的窗户上常常会结出美丽的冰花。",
    "蜜蜂是勤劳的小昆虫。它们每天在花丛中飞来飞去，采集花粉和花蜜，再带回蜂巢酿成蜂蜜。"
    "蜜蜂在采蜜的同时还帮助植物传播花粉，所以很多水果的丰收都离不开蜜蜂。",
    "做事情要有计划。每天晚上花五分钟想一想第二天要做什么，把重要的事情写在本子上，"
    "第二天就不容易手忙脚乱。完成一件事以后划掉它，会让人觉得很有成就感。",
    "长城是中国古代修建的防御工程，东西绵延上万里。古人用石头、砖块和夯土一段一段地修筑城墙，"
    "在山脊上建起烽火台。遇到敌人来犯时，守兵点燃烽火，消息很快就能传到远方。",
    "植物的根可以从土壤中吸收水分和养分，叶子可以利用阳光进行光合作用，制造养料并放出氧气。"
    "所以我们常说，绿色植物是地球上的氧气工厂。",
    "读书的时候，可以先看目录，了解全书的结构；再带着问题去读，遇到不懂的地方做个记号。"
    "读完以后，试着用自己的话把主要内容讲给别人听，这样记得最牢。",
    "秋天到了，果园里的苹果红了，梨子黄了，葡萄紫了。人们提着篮子走进果园，一边采摘一边品尝，"
    "脸上洋溢着丰收的喜悦。田野里，金黄的稻穗低着头，好像在向大地鞠躬。",
    "地球一边自转一边绕着太阳公转。自转一周是一天，所以有了白天和黑夜；公转一周是一年，"
    "再加上地轴是倾斜的，于是就有了春夏秋冬四个季节。",
    "小小的种子里藏着一株完整的植物。只要有合适的温度、水分和空气，种子就会发芽，"
    "先长出根，再长出茎和叶。有的种子靠风传播，有的靠动物传播，还有的会自己弹出去。",
    "计算机只认识零和一。文字、图片和声音在计算机里都要变成一串串二进制数字才能保存和处理。"
    "一个字节有八位，可以表示二百五十六种不同的状态。",
    "保护眼睛很重要。看书写字时要保持一尺的距离，光线要充足；使用电子产品半小时左右就应该休息一下，"
    "向远处眺望，或者做一做眼保健操。",
    "垃圾分类可以让资源得到再利用。可回收物包括纸张、塑料瓶和金属罐，厨余垃圾可以用来制作肥料，"
    "有害垃圾比如废电池需要专门处理，不能随便丢弃。",
    "在古代，人们用日晷和漏壶来计时。日晷利用太阳照射下影子的位置来判断时间，漏壶则利用水滴"
    "均匀地流出来计算时间。后来机械钟表出现，人们才能更准确地知道时间。",
]
